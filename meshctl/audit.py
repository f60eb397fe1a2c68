"""Staged policies' evidence: the AUDIT flows the nodes recorded, per policy, and the gate.

The datapath reports an AUDIT flow where a staged policy would decide otherwise (flows/flow.py);
the flow stores keep them like any flow. Here they are read back per staged policy since it was
staged: for the plan that enforces it, for `meshctl audit report`, and for
`[rollout] requireCleanAudit`, which refuses to enforce a policy staged for less than the
window or that would have dropped traffic within it.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from pathlib import Path

from meshctl.errors import MeshctlError
from meshctl.flows.filters import FlowFilter, parse_duration
from meshctl.flows.flow import Flow
from meshctl.flows.store import StoreError, open_stores, query_all
from meshctl.plan.staged import (
    AuditGroup,
    Enforcement,
    StagedPolicy,
    age_text,
    enforced_now,
    group_audits,
    names_policy,
    parse_time,
    staged_rows,
)

SHOWN_IN_REFUSAL = 5


class AuditGateError(MeshctlError):
    """requireCleanAudit refused to enforce a staged policy (nothing was applied)."""


def audit_flows(state_dir: Path, since: datetime) -> list[Flow] | None:
    """Every AUDIT flow the stores hold since `since`; None when there is no flow store."""
    try:
        stores = open_stores(state_dir)
    except StoreError:
        return None
    try:
        flt = FlowFilter(verdicts=("AUDIT",), since_ns=int(since.timestamp() * 1e9))
        return query_all(stores, flt)
    finally:
        for s in stores:
            s.close()


def evidence(flows: Iterable[Flow] | None, policy: str) -> tuple[AuditGroup, ...] | None:
    """The AUDIT flows of one staged policy, grouped; None when nothing could be read."""
    if flows is None:
        return None
    return group_audits(f for f in flows if names_policy(f, policy))


def plan_inputs(
    state_dir: Path, recorded: Mapping[str, Mapping[str, str]], staged_digests: Mapping[str, str],
    policies: Iterable[str],
) -> tuple[tuple[StagedPolicy, ...], tuple[Enforcement, ...]]:
    """What a plan records about staged policies: the target's staged ones, and the ones it
    enforces with the AUDIT flows seen since each was staged (the stores are read only then)."""
    staged = staged_rows(staged_digests, recorded)
    enforcing = enforced_now(recorded, staged_digests, policies)
    if not enforcing:
        return staged, ()
    oldest = min(parse_time(s) for s in enforcing.values())
    flows = audit_flows(state_dir, oldest)
    rows = []
    for policy, since in enforcing.items():
        start_ns = parse_time(since).timestamp() * 1e9
        mine = None if flows is None else [f for f in flows if f.time_ns >= start_ns]
        rows.append(Enforcement(policy, since, evidence(mine, policy)))
    return staged, tuple(rows)


@dataclass(frozen=True)
class PolicyAudit:
    """One staged policy's AUDIT flows in [start, now]; `evidence` None: no store to read."""

    policy: str
    since: str  # when this version was staged
    start: str  # the report's window start (since, or later with --since)
    evidence: tuple[AuditGroup, ...] | None


def audit_report(
    state_dir: Path, staged: Mapping[str, str], window_s: float | None = None, now: datetime | None = None
) -> list[PolicyAudit]:
    """Per staged policy (policy -> since), what it would have dropped and allowed since it was
    staged, or in the last `window_s` seconds when that is shorter."""
    now = now or datetime.now(UTC)
    starts = {}
    for policy, since in staged.items():
        start = parse_time(since)
        if window_s is not None:
            start = max(start, now - timedelta(seconds=window_s))
        starts[policy] = start
    flows = audit_flows(state_dir, min(starts.values())) if starts else []
    out = []
    for policy, start in starts.items():
        start_ns = start.timestamp() * 1e9
        mine = None if flows is None else [f for f in flows if f.time_ns >= start_ns]
        start_text = start.isoformat(timespec="seconds")
        out.append(PolicyAudit(policy, staged[policy], start_text, evidence(mine, policy)))
    return out


@dataclass(frozen=True)
class GateVerdict:
    policy: str
    reasons: tuple[str, ...]  # empty: clean


def check_clean(
    state_dir: Path, enforcing: Iterable[Enforcement], window: str, now: datetime | None = None
) -> list[GateVerdict]:
    """requireCleanAudit for each policy the plan enforces, from the stores as they are now
    (flows may have arrived since the plan was made)."""
    now = now or datetime.now(UTC)
    span = timedelta(seconds=parse_duration(window, "requireCleanAudit"))
    rows = list(enforcing)
    flows = audit_flows(state_dir, now - span) if rows else []
    out = []
    for row in rows:
        reasons: list[str] = []
        staged_for = now - parse_time(row.since)
        if staged_for < span:
            reasons.append(f"staged for {age_text(staged_for.total_seconds())} (since {row.since}), "
                           f"less than requireCleanAudit = {window!r}")
        start_ns = max(parse_time(row.since), now - span).timestamp() * 1e9  # this version, in the window
        groups = evidence(None if flows is None else [f for f in flows if f.time_ns >= start_ns], row.policy)
        if groups is None:
            reasons.append("no flow store could be read: the audit window cannot be checked")
        else:
            drops = [g for g in groups if g.effect == "would drop"]
            for g in drops[:SHOWN_IN_REFUSAL]:
                reasons.append(g.line(now))
            if len(drops) > SHOWN_IN_REFUSAL:
                reasons.append(f"... and {len(drops) - SHOWN_IN_REFUSAL} more connections")
        out.append(GateVerdict(row.policy, tuple(reasons)))
    return out


def gate(state_dir: Path, enforcing: Iterable[Enforcement], window: str | None, force: bool,
         now: datetime | None = None) -> None:
    """Raise AuditGateError naming the flows unless every enforced policy is clean (or forced)."""
    if window is None or force:
        return
    dirty = [v for v in check_clean(state_dir, enforcing, window, now) if v.reasons]
    if not dirty:
        return
    lines = [f"requireCleanAudit = {window!r}: refusing to enforce {len(dirty)} staged policy(ies); "
             "nothing was applied."]
    for v in dirty:
        lines.append(f"  {v.policy}:")
        lines.extend(f"    {r}" for r in v.reasons)
    lines.append("Fix the policy (it stays staged and the window starts again), wait, or apply with "
                 "--force-enforce.")
    raise AuditGateError("\n".join(lines))
