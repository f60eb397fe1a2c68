"""The audit report (meshctl audit report) as text, markdown (a PR comment) and JSON."""

from __future__ import annotations

from datetime import datetime
from typing import Any

from meshctl.audit import PolicyAudit
from meshctl.plan.staged import WOULD_ALLOW, WOULD_DROP, AuditGroup, age_text, parse_time

EFFECTS = ((WOULD_DROP, "would drop"), (WOULD_ALLOW, "would allow"))


def _groups(row: PolicyAudit, effect: str) -> list[AuditGroup]:
    return [g for g in row.evidence or () if g.effect == effect]


def _staged_for(row: PolicyAudit, now: datetime) -> str:
    return age_text((now - parse_time(row.since)).total_seconds())


def _count(groups: list[AuditGroup]) -> str:
    n = sum(g.count for g in groups)
    return f"{n:,} flow{'s' if n != 1 else ''} ({len(groups)} connection{'s' if len(groups) != 1 else ''})"


def render_text(cluster: str, rows: list[PolicyAudit], now: datetime) -> str:
    if not rows:
        return f"No staged policies in {cluster}: nothing is in audit mode.\n"
    lines = [f"Staged policies of {cluster} (audit mode: loaded and judged, never enforced):", ""]
    for row in rows:
        lines.append(f"{row.policy}: staged {_staged_for(row, now)} ago (since {row.since}), "
                     f"AUDIT flows since {row.start}")
        if row.evidence is None:
            lines += ["  no flow store could be read: nothing is known of its traffic", ""]
            continue
        for effect, title in EFFECTS:
            groups = _groups(row, effect)
            lines.append(f"  {title}: {_count(groups) if groups else 'nothing'}")
            lines += [f"    {g.line(now)}" for g in groups]
        lines.append("")
    return "\n".join(lines)


def render_markdown(cluster: str, rows: list[PolicyAudit], now: datetime) -> str:
    out = [f"### meshctl audit report: {cluster}\n\n"]
    if not rows:
        return out[0] + "No staged policies: nothing is in audit mode.\n"
    out.append("| Staged policy | Staged for | Would drop | Would allow |\n|---|---|---|---|\n")
    for row in rows:
        cells = ["unknown (no flow store)"] * 2 if row.evidence is None else [
            ("⛔ " if groups and effect == WOULD_DROP else "") + (_count(groups) if groups else "none")
            for effect, _ in EFFECTS for groups in [_groups(row, effect)]]
        out.append(f"| `{row.policy}` | {_staged_for(row, now)} | {cells[0]} | {cells[1]} |\n")
    for row in rows:
        if not row.evidence:
            continue
        out.append(f"\n<details><summary>{row.policy}: AUDIT flows since {row.start}</summary>\n\n")
        out += [f"- {'⛔ ' if g.effect == WOULD_DROP else '✅ '}{g.line(now)}\n" for g in row.evidence]
        out.append("\n</details>\n")
    return "".join(out)


def to_json(cluster: str, rows: list[PolicyAudit], now: datetime) -> dict[str, Any]:
    return {
        "cluster": cluster,
        "generated_at": now.isoformat(timespec="seconds"),
        "policies": [
            {"policy": r.policy, "since": r.since, "window_start": r.start,
             "evidence": None if r.evidence is None else [g.to_json() for g in r.evidence]}
            for r in rows
        ],
    }
