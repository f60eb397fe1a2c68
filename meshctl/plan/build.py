"""build_plan: observed + intended + catalog (+ desired, state) -> Plan. The one place plans are made."""

from __future__ import annotations

from collections.abc import Callable, Iterable, Mapping, Sequence
from dataclasses import replace
from datetime import UTC, datetime
from typing import Any

from meshctl import __version__
from meshctl.catalog import Catalog, RuleOrigin
from meshctl.connections import TrackedConnection
from meshctl.gcpause import paused_gc
from meshctl.lazypolicy import map_cookies
from meshctl.nodestate import NodeState
from meshctl.plan.capacity import capacity_warnings, check_capacity
from meshctl.plan.cuts import established_cuts, nodes_to_read
from meshctl.plan.diff import diff_node
from meshctl.plan.impact import PodTarget, VerdictFn, connectivity_impact, pods_from_desired, staged_impact
from meshctl.plan.loadbalancer import lb_warnings
from meshctl.plan.model import CutRow, NodePlan, Plan, PlanWarning
from meshctl.plan.staged import Enforcement, StagedPolicy
from meshctl.plan.warnings import dns_warnings, foreign_warnings, passthrough

LiveConnections = Mapping[str, Sequence[TrackedConnection]]
# node -> live established connections, or a reader called with the nodes worth reading
Connections = LiveConnections | Callable[[Sequence[str]], LiveConnections]


def build_plan(
    observed: Mapping[str, NodeState],
    intended: Mapping[str, NodeState],
    catalog: Catalog,
    *,
    desired: Any = None,
    state: Any = None,
    compiled_warnings: Iterable[object] = (),
    pods: Sequence[PodTarget] | None = None,
    verdict_fn: VerdictFn | None = None,
    impact: bool = True,
    created_at: datetime | None = None,
    connections: Connections | None = None,
    staged: Sequence[StagedPolicy] = (),
    enforcing: Sequence[Enforcement] = (),
) -> Plan:
    """A node missing on one side counts as empty there (a new node, or one to clean up).

    `desired` (a DesiredState) gives the source commit/dirty flag and, unless `pods` is given,
    the pods and ports the impact covers; `state` (a meshctl.state.State) gives lineage/serial.
    `connections` gives the live established connections per node, or reads them: called once
    with the nodes whose changes can cut connections (only those tables are read). Without it
    the plan says nothing about established connections. `staged` and `enforcing` (see
    meshctl.plan.staged) are recorded as given; the plan adds what enforcing the staged would change.
    A state that would overflow a BPF map is refused (CompileError) before anything is diffed.
    """
    check_capacity(intended, catalog)
    with paused_gc():  # diffing huge states (and parsing big conntrack tables) makes only acyclic objects
        plan = _build_plan(observed, intended, catalog, desired, state, compiled_warnings, pods, verdict_fn,
                           impact, created_at)
        if connections is not None and plan.has_changes:
            plan = replace(plan, cuts=_cuts(plan, observed, intended, catalog, desired, pods, connections))
        if staged or enforcing:
            plan = replace(plan, staged=tuple(staged), enforcing=tuple(enforcing))
        if impact and staged and plan.has_changes:
            targets = _targets(desired, pods)
            plan = replace(plan, staged_impact=tuple(staged_impact(intended, catalog, targets)))
        return plan


def _cuts(
    plan: Plan,
    observed: Mapping[str, NodeState],
    intended: Mapping[str, NodeState],
    catalog: Catalog,
    desired: Any,
    pods: Sequence[PodTarget] | None,
    connections: Connections,
) -> tuple[CutRow, ...]:
    changes = {n.node: n.changes for n in plan.nodes}
    nodes = nodes_to_read(changes)
    if not nodes:
        return ()
    live = connections(nodes) if callable(connections) else connections
    if not any(live.values()):
        return ()
    names = {p.ip: p.name for p in _targets(desired, pods)}
    return tuple(established_cuts(observed, intended, changes, live, catalog, names))


def _targets(desired: Any, pods: Sequence[PodTarget] | None) -> Sequence[PodTarget]:
    if pods is not None:
        return pods
    return pods_from_desired(desired) if desired is not None else []


def target_rules(intended: Mapping[str, NodeState], catalog: Catalog) -> tuple[tuple[int, RuleOrigin], ...]:
    """cookie -> rule for every cookie the intended policy maps hold (maps are shared: each once)."""
    cookies: set[int] = set()
    seen: set[int] = set()
    for ns in intended.values():
        for entries in ns.policies.values():
            if id(entries) not in seen:
                seen.add(id(entries))
                cookies.update(map_cookies(entries))
    return tuple(sorted((c, catalog.cookies[c]) for c in cookies if c in catalog.cookies))


def _build_plan(
    observed: Mapping[str, NodeState],
    intended: Mapping[str, NodeState],
    catalog: Catalog,
    desired: Any,
    state: Any,
    compiled_warnings: Iterable[object],
    pods: Sequence[PodTarget] | None,
    verdict_fn: VerdictFn | None,
    impact: bool,
    created_at: datetime | None,
) -> Plan:
    nodes: list[NodePlan] = []
    memo: dict[tuple[int, int], bool] = {}  # policy map comparisons, shared by the nodes
    for name in sorted(set(observed) | set(intended)):
        before = observed.get(name) or NodeState(name)
        after = intended.get(name) or NodeState(name)
        nodes.append(NodePlan.of(before, after, diff_node(before, after, catalog, memo)))

    rows = []
    if impact and any(n.changes for n in nodes):
        rows = connectivity_impact(observed, intended, catalog, _targets(desired, pods), verdict_fn)

    warnings: list[PlanWarning] = [
        *passthrough(compiled_warnings),
        *dns_warnings(observed, intended, catalog),
        *capacity_warnings(intended, catalog),
        *lb_warnings(observed, intended),
        *foreign_warnings(observed, catalog),
    ]
    return Plan(
        rules=target_rules(intended, catalog),
        created_at=(created_at or datetime.now(UTC)).isoformat(timespec="seconds"),
        meshctl_version=__version__,
        source_commit=getattr(desired, "commit", None),
        source_dirty=bool(getattr(desired, "dirty", False)),
        state_lineage=getattr(state, "lineage", None),
        state_serial=int(getattr(state, "serial", 0)),
        nodes=tuple(nodes),
        impact=tuple(rows),
        warnings=tuple(warnings),
    )
