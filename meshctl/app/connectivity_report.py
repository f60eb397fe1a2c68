"""Renders a connectivity test report (meshctl.app.connectivity): a summary table and JSON."""

from __future__ import annotations

from typing import Any

from meshctl.app.connectivity import CheckResult, ConnectivityReport

HEADER = ("RESULT", "KIND", "CHECK", "SOURCE", "DESTINATION", "PORT", "WHERE", "EXPECT", "GOT", "FLOW")


def _flow_cell(r: CheckResult) -> str:
    if r.flow is None:
        return "-" if not r.confirm else "missing"
    return f"{r.flow.verdict_name} @{r.flow.node}"


def row(r: CheckResult) -> tuple[str, ...]:
    return ("PASS" if r.passed else "FAIL", r.kind, r.name, r.src, r.dst, f"{r.port}/{r.protocol}",
            r.locality, r.expect, "connected" if r.connected else "blocked", _flow_cell(r))


def summary_table(report: ConnectivityReport) -> str:
    rows = [HEADER, *(row(r) for r in report.results)]
    widths = [max(len(x[i]) for x in rows) for i in range(len(HEADER))]
    return "\n".join("  ".join(c.ljust(w) for c, w in zip(x, widths, strict=True)).rstrip() for x in rows)


def to_json(report: ConnectivityReport) -> dict[str, Any]:
    return {
        "ok": report.ok, "passed": report.passed, "failed": len(report.results) - report.passed,
        "notes": report.notes,
        "checks": [{
            "kind": r.kind, "name": r.name, "source": r.probe.source, "src": r.src, "dst": r.dst,
            "dst_ip": r.probe.dst_ip, "port": r.port, "protocol": r.protocol, "locality": r.locality,
            "expect": r.expect, "connected": r.connected, "passed": r.passed, "detail": r.detail,
            "flow": r.flow.to_dict() if r.flow else None,
        } for r in report.results],
    }
