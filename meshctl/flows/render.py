"""Flow output formats of `meshctl observe`: compact, json (one object per line), table, dict."""

from __future__ import annotations

import json
from collections.abc import Iterable
from datetime import datetime

from meshctl.flows.flow import L7_DNS_REQUEST, L7_REQUEST, Flow, tcp_flags_text

FORMATS = ("compact", "json", "table", "dict")


def timestamp(time_ns: int) -> str:
    """hubble's compact stamp: `Dec  9 10:23:45.123` (local time)."""
    dt = datetime.fromtimestamp(time_ns / 1e9)
    return f"{dt:%b} {dt.day:2d} {dt:%H:%M:%S}.{dt.microsecond // 1000:03d}"


def endpoint(pod: str, ip: str, port: int, identity: int, with_port: bool,
             names: tuple[str, ...] = ()) -> str:
    """The pod, else the DNS names the address was answered for (as Hubble), else the address."""
    name = pod or ",".join(names) or ip
    return f"{name}:{port}" if with_port else name


def verdict_text(f: Flow) -> str:
    """`FORWARDED (TCP Flags: SYN)`, `DROPPED (default deny: ... isolated by ...)` or
    `AUDIT (would drop: denied by ...)`."""
    if f.verdict == 2:
        return f"DROPPED ({f.drop_reason})"
    if f.verdict == 4:
        why = f.drop_reason or (f"by {f.policy}" if f.policy else "")
        return f"AUDIT ({f.audit_effect}: {why})" if why else f"AUDIT ({f.audit_effect})"
    tcp = f.protocol == 6 and f.tcp_flags
    detail = f"TCP Flags: {tcp_flags_text(f.tcp_flags)}" if tcp else f.protocol_name
    return f"FORWARDED ({detail})"


def l7_text(f: Flow) -> str:
    """Hubble's L7 line: `http-request FORWARDED (HTTP/1.1 GET /api/users)`, `dns-request
    FORWARDED (DNS Query api.stripe.com A)`, with the rule that allowed a request, or the
    policies whose L7 rules a denied one did not match."""
    line = f"{f.l7_type} {f.verdict_name} ({f.l7_summary})"
    if f.l7 in (L7_REQUEST, L7_DNS_REQUEST) and f.verdict == 1 and f.policy:
        line += f" by {f.policy}"
    elif f.l7 in (L7_REQUEST, L7_DNS_REQUEST) and f.verdict == 2:
        line += f": {f.drop_reason}"
    return line


def compact(f: Flow) -> str:
    ports = f.protocol in (6, 17)
    src = endpoint(f.src_pod, f.src_ip, f.src_port, f.src_identity, ports, f.src_names)
    dst = endpoint(f.dst_pod, f.dst_ip, f.dst_port, f.dst_identity, ports, f.dst_names)
    line = (f"{timestamp(f.time_ns)} {src} (ID:{f.src_identity}) -> {dst} (ID:{f.dst_identity}) "
            f"{l7_text(f) if f.l7 else verdict_text(f)}")
    if f.verdict == 1 and f.policy and not f.l7:
        line += f" by {f.policy}"
    return line


def as_json(f: Flow) -> str:
    return json.dumps(f.to_dict(), sort_keys=True, separators=(",", ":"))


def as_dict(f: Flow) -> str:
    """hubble's `-o dict`: one `key: value` per line, a blank line between flows."""
    d = f.to_dict()
    keys = ("time", "node", "src", "dst", "verdict", "drop_reason", "policy", "protocol", "direction",
            "tcp_flags", "src_identity", "dst_identity", "src_labels", "dst_labels")
    view = {
        "time": timestamp(f.time_ns), "node": f.node,
        "src": f"{f.src_pod or '-'} {f.src_ip}:{f.src_port}",
        "dst": f"{f.dst_pod or '-'} {f.dst_ip}:{f.dst_port}",
        **({"type": f.l7_type, "summary": f.l7_summary} if f.l7 else {}),
        **{k: d[k] for k in keys if k in d},
    }
    width = max(len(k) for k in view)
    return "\n".join(
        f"{k.upper():>{width}}: {', '.join(v) if isinstance(v, list) else v}" for k, v in view.items()
    ) + "\n"


TABLE_HEADER = ("TIMESTAMP", "NODE", "SOURCE", "DESTINATION", "TYPE", "VERDICT", "SUMMARY")


def table_row(f: Flow) -> tuple[str, ...]:
    ports = f.protocol in (6, 17)
    if f.l7:
        summary = f.l7_summary + (f": {f.drop_reason}" if f.verdict == 2 else "")
    else:
        summary = f.drop_reason if f.verdict == 2 else verdict_text(f) if f.verdict == 4 else (
            f"TCP Flags: {tcp_flags_text(f.tcp_flags)}" if f.protocol == 6 else f.protocol_name)
    return (timestamp(f.time_ns), f.node,
            endpoint(f.src_pod, f.src_ip, f.src_port, f.src_identity, ports, f.src_names),
            endpoint(f.dst_pod, f.dst_ip, f.dst_port, f.dst_identity, ports, f.dst_names),
            f.l7_type or f"policy-verdict:{f.direction_name}", f.verdict_name, summary)


def table(flows: Iterable[Flow]) -> str:
    rows = [TABLE_HEADER, *(table_row(f) for f in flows)]
    widths = [max(len(r[i]) for r in rows) for i in range(len(TABLE_HEADER))]
    return "\n".join("  ".join(c.ljust(w) for c, w in zip(r, widths, strict=True)).rstrip() for r in rows)


def render_one(f: Flow, fmt: str) -> str:
    if fmt == "json":
        return as_json(f)
    if fmt == "dict":
        return as_dict(f)
    if fmt == "table":
        return "  ".join(table_row(f))
    return compact(f)
