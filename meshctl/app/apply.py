"""`meshctl apply`: apply a Plan to the nodes: lock, refuse stale plans, run the engine, commit the state.

The order of durable writes is what makes a kill -9 at any instant recoverable:
1. lock (O_EXCL file), 2. per node a fsync'd `begin` record with the exact before-state
BEFORE the node is touched, 3. `done`/`reverted` records, 4. the new state (atomic rename,
serial + 1), 5. the journal is removed. A journal left behind means "interrupted": plan and
apply refuse until `meshctl recover` has put every begun node back to its before-state.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable
from dataclasses import dataclass, replace
from datetime import UTC, datetime
from ipaddress import IPv4Address
from typing import TYPE_CHECKING, Literal

from meshctl.apply.crash import crash_point
from meshctl.apply.engine import ApplyEngine, ApplyResult, NodeWork, RolloutSettings
from meshctl.errors import ApplyError, PlanError, PlanStaleError
from meshctl.nodestate import NodeState

if TYPE_CHECKING:
    from meshctl.app.workspace import Workspace
    from meshctl.compile.intent import NodeIntent
    from meshctl.plan import Plan
    from meshctl.plan.impact import PodTarget
    from meshctl.state import State

Rollback = Literal["node", "all"]
STALE_DETAIL_LINES = 20


@dataclass(frozen=True)
class ApplyOutcome:
    plan_id: str
    result: ApplyResult
    serial: int


def settings_of(ws: Workspace, rollback: Rollback | None) -> RolloutSettings:
    r = ws.config.rollout
    return RolloutSettings(
        canary=tuple(r.canary), batch_size=r.batch_size, verify_window_s=r.verify_window_s,
        drop_rate_threshold=r.drop_rate_threshold, rollback=rollback or r.rollback,
    )


def apply_plan(
    ws: Workspace,
    plan: Plan,
    *,
    rollback: Rollback | None = None,
    on_event: Callable[[str], None] | None = None,
    lock_held: bool = False,
    checks: bool = True,
    force_enforce: bool = False,
) -> ApplyOutcome:
    """Apply `plan` (made from this workspace); raises PlanStaleError (or, under requireCleanAudit,
    AuditGateError) before touching anything."""
    from meshctl.app.workspace import ensure_not_interrupted
    from meshctl.state.operations import measured

    with measured(ws.state_dir, "apply") as metric:  # counts and durations for the agents' /metrics
        ensure_not_interrupted(ws.state_dir)  # before the lock: a killed apply leaves both behind
        if lock_held:
            outcome = _apply_locked(ws, plan, rollback, on_event, checks, force_enforce)
        else:
            with ws.lock("apply"):
                outcome = _apply_locked(ws, plan, rollback, on_event, checks, force_enforce)
        metric["result"] = "success" if outcome.result.ok else "failure"
        return outcome


def _apply_locked(
    ws: Workspace,
    plan: Plan,
    rollback: Rollback | None,
    on_event: Callable[[str], None] | None,
    checks: bool,
    force_enforce: bool = False,
) -> ApplyOutcome:
    from meshctl import audit
    from meshctl.app.encryption import known_after_apply
    from meshctl.app.workspace import ensure_not_interrupted, load_cluster_state
    from meshctl.plan.model import rule_json
    from meshctl.plan.staged import record_staged
    from meshctl.state import save_state

    ensure_not_interrupted(ws.state_dir)
    backend = ws.backend  # the lab, or the nodes' agents ([apply] driver = "agent")
    unknown = [n.node for n in plan.nodes if n.node not in backend.nodes]
    if unknown:
        raise PlanError(f"the plan names node(s) {', '.join(unknown)} that {backend.describe()} lacks")
    order = [n for n in ws.node_order if n in {p.node for p in plan.nodes}]
    driver = backend.driver(plan.plan_id, hold=order)  # the agents: each node locked, in node order
    try:
        state = load_cluster_state(ws).state  # lineage and serial as the nodes hold them
        run_check = backend.check_runner(driver, ws.pod_nodes(), ws.pod_ips(), ws.state_dir)
        observed = {n.node: driver.observe(n.node) for n in plan.nodes}
        refuse_stale(plan, observed, state)
        work = [NodeWork(n.node, observed[n.node], n.target_for(observed[n.node])) for n in plan.nodes]
        intent = plan_intent(plan)  # refused here, before any node is touched, when unreadable
        audit.gate(ws.state_dir, plan.enforcing, ws.config.rollout.require_clean_audit, force_enforce)
        journal = backend.journal(ws.state_dir, plan.plan_id)  # the agents: each node journals itself
        from meshctl.apply.gates import predicted_drop_keys

        engine = ApplyEngine(
            driver, journal, run_check,
            settings_of(ws, rollback), on_event,
            flow_drops=backend.drop_source(driver, ws.pod_ips(), ws.state_dir),  # drop gate: flows first
        )
        from meshctl.compile.services import frontend_nodes

        started = datetime.now(UTC).isoformat(timespec="seconds")  # staged policies are judged from here on
        unshared: list[str] = []
        result = engine.run(
            work, ws.node_order, ws.desired.checks if checks else (), ws.pod_nodes(),
            frontend_nodes=frontend_nodes(ws.desired.services, ws.desired.pods),
            predicted_keys=predicted_drop_keys((*plan.impact, *plan.cuts)),  # new and established connections
            pods=probe_pods(ws) if checks else (), impact=plan.impact if checks else (),
        )
        crash_point("commit")
        applied = {w.node: w.target for w in work if w.node in result.applied}
        if applied:  # nodes that needed nothing are at their target too: record their intent as well
            applied.update({w.node: w.target for w in work if w.before == w.target})
            applied = known_after_apply(applied, backend)  # public keys generated on the nodes
            rules = {str(cookie): rule_json(origin) for cookie, origin in plan.rules}
            staged = record_staged(state.staged, plan.staged, started)
            revision = int(plan.inventory["revision"]) if plan.inventory else None
            recorded = state.record_apply(plan.plan_id, applied, rules=rules, staged=staged,
                                          inventory_revision=revision)
            state = save_state(ws.state_dir, recorded)
            unshared = hand_out_shares(ws, state, applied)
            if intent is not None:  # each node's agent follows pods under what it now holds
                for node, target in applied.items():
                    backend.record_intent(node, replace(intent, encryption=target.encryption,
                                                        load_balancer=target.load_balancer), ws.state_dir)
        crash_point("committed")
        journal.clear()
    except BaseException:
        backend.end_apply(driver, ())  # stop renewing: the nodes it holds go back when their leases run out
        raise
    # the nodes at their target or back at their before-state are let go as they are now
    lost = backend.end_apply(driver, [*applied, *result.reverted])
    if lost:
        raise ApplyError("the apply is recorded, but these nodes were no longer held by it (their "
                         "agents reverted them when the lease ran out; `meshctl drift` shows them): "
                         + "; ".join(lost + unshared))
    if unshared:
        raise ApplyError("the apply is recorded, but: " + "; ".join(unshared))
    return ApplyOutcome(plan.plan_id, result, state.serial)


def refuse_stale(plan: Plan, observed: dict[str, NodeState], state: State) -> None:
    """Raise PlanStaleError, with what moved on the nodes when it can be told, unless the nodes
    and the state are where the plan was made from."""
    from meshctl.plan import check_fresh
    from meshctl.plan.stale import endpoint_catalog, explain_stale

    try:
        check_fresh(plan, {n: s.fingerprint() for n, s in observed.items()}, state)
    except PlanStaleError as err:
        details = explain_stale(
            plan, observed, {n: r.intended for n, r in state.nodes.items()},
            endpoint_catalog(state.endpoint_ids),
            replayed=lambda node_plan, live: stale_details(plan, {node_plan.node: live}),
        )
        if not details:
            raise
        shown = details[:STALE_DETAIL_LINES]
        more = len(details) - len(shown)
        text = "\n".join(["", "Changed on the nodes since the plan was made:", *shown])
        text += f"\n  ... and {more} more" if more else ""
        raise PlanStaleError(f"{err}{text}\nNothing was applied; make a new plan.") from err


def hand_out_shares(ws: Workspace, state: State, applied: Iterable[str]) -> list[str]:
    """Give each applied node its share of the recorded state (meshctl.state.cluster); the
    errors of nodes that did not take it (the next plan names their older serial)."""
    from meshctl.errors import MeshctlError
    from meshctl.state.cluster import node_share

    errors = []
    for node in applied:
        try:
            ws.backend.record_share(node, node_share(state, node), ws.state_dir)
        except MeshctlError as err:
            errors.append(f"node {node}: its share of the state was not recorded ({err})")
    return errors


def plan_intent(plan: Plan) -> NodeIntent | None:
    """The intent a plan made with a runtime inventory hands the nodes (meshctl.compile.intent)."""
    from meshctl.compile.intent import NodeIntent

    if plan.intent is None:
        return None
    try:
        return replace(NodeIntent.from_json(plan.intent), plan_id=plan.plan_id)
    except ValueError as err:
        raise PlanError(f"plan {plan.plan_id[:12]}: intent: {err}") from None


def probe_pods(ws: Workspace) -> list[PodTarget]:
    """The pods verify probes may connect between: live address and declared container ports."""
    from meshctl.plan.impact import PodTarget

    ips = ws.pod_ips()
    out = []
    for pod in ws.desired.pods:
        key = f"{pod.namespace}/{pod.name}"
        if ips.get(key) is not None:
            ports = tuple((p.protocol.upper(), int(p.container_port)) for p in pod.ports)
            out.append(PodTarget(key, IPv4Address(str(ips[key])), ports))
    return out


def stale_details(plan: Plan, observed: dict[str, NodeState]) -> list[str]:
    """What moved on each stale node: the plan-time state is rebuilt from the plan (its target
    with every change undone) and diffed against the live one. Only a plan made in this process
    knows its full target; a saved plan records changes only, so it gets the short message."""
    from meshctl.plan import Action, apply_changes, diff_node

    inverse_action = {Action.CREATE: Action.DELETE, Action.DELETE: Action.CREATE}
    words = {Action.CREATE: "appeared", Action.DELETE: "went missing", Action.UPDATE: "changed"}
    lines: list[str] = []
    for node_plan in plan.nodes:
        live = observed.get(node_plan.node)
        if live is None or node_plan.intended is None or live.fingerprint() == node_plan.observed_fingerprint:
            continue
        undo = [
            replace(c, action=inverse_action.get(c.action, c.action), before=c.after, after=c.before)
            for c in reversed(node_plan.changes)
        ]
        try:
            then = apply_changes(node_plan.intended, undo, strict=False)
        except (PlanError, KeyError, ValueError):
            continue
        if then.fingerprint() != node_plan.observed_fingerprint:
            continue
        for c in diff_node(then, live):
            lines.append(f"  {c.action.symbol} {c.address}: {words.get(c.action, 'changed')}")
    return lines
