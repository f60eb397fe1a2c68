"""The staged-policies part of a plan, as lines: shared by the text and markdown renderers.

Times are relative to the plan's creation, so a plan renders the same whenever it is shown.
"""

from __future__ import annotations

from meshctl.plan.model import ImpactRow, Plan
from meshctl.plan.staged import WOULD_DROP, Enforcement, StagedPolicy, age_text, parse_time


def staged_line(plan: Plan, row: StagedPolicy) -> str:
    """`CiliumNetworkPolicy production/x: staged since 2026-12-01T14:02:00+00:00 (3 hours)`."""
    if row.since is None:
        return f"{row.policy}: staged by this apply (audit mode: loaded, not enforced)"
    return f"{row.policy}: staged since {row.since} ({_age(plan, row.since)})"


def enforcement_line(plan: Plan, row: Enforcement) -> str:
    return f"{row.policy}: audit -> enforce, staged since {row.since} ({_age(plan, row.since)})"


def evidence_lines(plan: Plan, row: Enforcement) -> list[tuple[str, bool]]:
    """(line, is a would-drop) for the AUDIT flows since the policy was staged, or why there
    are none to show."""
    if row.evidence is None:
        return [("no flow store could be read: nothing is known of the traffic since it was staged", False)]
    if not row.evidence:
        return [("no AUDIT flows since it was staged: enforcing it changes no traffic seen", False)]
    now = parse_time(plan.created_at)
    return [(g.line(now), g.effect == WOULD_DROP) for g in row.evidence]


def would_line(r: ImpactRow) -> str:
    return f"{r.src} -> {r.dst} {r.protocol}/{r.port}: {r.before} -> {r.after} once enforced"


def _age(plan: Plan, since: str) -> str:
    return age_text((parse_time(plan.created_at) - parse_time(since)).total_seconds())
