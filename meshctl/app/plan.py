"""`meshctl plan`: compile, observe and diff into a Plan (and save it).

The one wiring of load -> compile -> observe -> plan that plan, apply and drift share.
"""

from __future__ import annotations

from collections.abc import Sequence
from contextlib import nullcontext
from dataclasses import dataclass, replace
from pathlib import Path
from typing import TYPE_CHECKING

from meshctl.app.workspace import Workspace, ensure_not_interrupted, load_cluster_state, select_nodes
from meshctl.gcpause import paused_gc
from meshctl.nodestate import NodeState

if TYPE_CHECKING:
    from meshctl.compile import Compiled
    from meshctl.plan import Plan
    from meshctl.source.runtime import RuntimeInventory
    from meshctl.state import State


@dataclass(frozen=True)
class PlanOutcome:
    plan: Plan
    compiled: Compiled
    observed: dict[str, NodeState]
    state: State
    mixed_serials: str | None = None  # the nodes hold different state serials (ClusterState.mixed)


@paused_gc()  # every step makes acyclic values only; collections over them cost seconds
def make_plan(ws: Workspace, only: Sequence[str] = (), *, lock_held: bool = False,
              record: bool = False, observed: dict[str, NodeState] | None = None,
              impact: bool = True) -> PlanOutcome:
    """Compile, observe and diff; saves newly allocated table entries into the state. `record`:
    a plan that finds nothing to do leaves the baseline of incremental plans (meshctl.app.increment).
    `observed` (drift): the live states of the nodes to plan, already read (`only` is then unused);
    only those nodes are asked for their share of the state. `impact=False` skips the
    connectivity impact (drift reports objects, not connections)."""
    from meshctl.app.encryption import with_encryption
    from meshctl.app.proxyrules import check_http_rules
    from meshctl.audit import plan_inputs
    from meshctl.dataplane.node import current_build
    from meshctl.loadbalancer.hook import with_load_balancer
    from meshctl.plan import PlanWarning, build_plan
    from meshctl.state.tables import compile_desired, persist_tables

    ensure_not_interrupted(ws.state_dir)
    nodes = select_nodes(ws, only) if observed is None else list(observed)
    compiled_build = current_build()
    runtime = ws.backend.runtime  # pods and their numbers from the cluster ([inventory] source = "lab")
    with nullcontext() if lock_held else ws.lock("plan"):
        cluster = load_cluster_state(ws, nodes)  # lineage, serial and tables as the nodes hold them
        state = cluster.state
        compiled = compile_desired(ws.desired, state, compiled_build, runtime)
        check_http_rules(compiled)  # Envoy's own verdict on the L7 regexes, before any node sees them
        state = persist_tables(ws.state_dir, state, compiled, runtime=runtime is not None)
    if observed is None:
        observed = ws.backend.observe_many(nodes)  # the lab's maps, or each node's agent
    intended = {n: compiled.nodes.get(n) or NodeState(n) for n in nodes}
    intended = with_encryption(ws.config, intended, observed, backend=ws.backend)  # next WireGuard step
    intended = with_load_balancer(ws.desired, intended, observed)  # services (kube-proxy replacement)
    limit = ws.config.policy.impact_max_pods  # impact is pods x pods x ports verdicts: big plans skip it
    with_impact = impact and len(ws.desired.pods) <= limit
    staged, enforcing = plan_inputs(ws.state_dir, state.staged, compiled.staged_digests,
                                    (d.title for d in compiled.spec.policies))
    plan = build_plan(
        observed, intended, compiled.catalog, desired=ws.desired, state=state,
        compiled_warnings=compiled.warnings, impact=with_impact,
        connections=ws.backend.connections,  # read only on nodes whose changes can cut
        staged=staged, enforcing=enforcing,
    )
    if impact and not with_impact and plan.has_changes:
        plan = with_impact_skipped(plan, len(ws.desired.pods), limit)
    mixed = cluster.mixed()
    if mixed is not None:
        plan = replace(plan, warnings=(*plan.warnings, PlanWarning(
            mixed, "the plan is made from the newest; a node behind it was left out of an apply "
            "(--node) or did not get its share when one stopped early")))
    if runtime is not None:
        plan = with_runtime(plan, runtime, compiled, compiled_build, state.inventory_revision)
    outcome = PlanOutcome(plan, compiled, observed, state, mixed)
    if record:
        from meshctl.app.increment import record_baseline

        record_baseline(ws, outcome, compiled_build)
    return outcome


def with_runtime(plan: Plan, runtime: RuntimeInventory, compiled: Compiled, build: str,
                 applied_revision: int | None) -> Plan:
    """`plan` with what the nodes keep to follow pods (the intent), the inventory revision it was
    made from, and the pods that came and went since the last apply: churn the node agents kept
    in step, listed as such (an info line), never as changes."""
    from meshctl.compile.intent import NodeIntent
    from meshctl.plan import PlanWarning

    intent = NodeIntent.of(compiled.spec, build, NodeState(""), commit=plan.source_commit or "")
    inventory: dict[str, object] = {"source": runtime.source, "revision": runtime.revision}
    warnings = plan.warnings
    if applied_revision is not None:
        churn = runtime.churn_since(applied_revision)
        inventory["churn"] = churn.to_json()
        if churn.noteworthy:
            warnings = (*warnings, PlanWarning(
                f"inventory: {churn.describe()}; the node agents kept the endpoints in step "
                "(runtime, not part of this plan)", severity="info"))
    return replace(plan, intent=intent.to_json(), inventory=inventory, warnings=warnings)


def with_impact_skipped(plan: Plan, pods: int, limit: int) -> Plan:
    """`plan` with the note that its connectivity impact was not computed (too many pods)."""
    from meshctl.plan import PlanWarning

    note = PlanWarning(f"connectivity impact skipped: {pods} pods (limit {limit})", severity="info")
    return replace(plan, warnings=(*plan.warnings, note))


def save_plan(ws: Workspace, plan: Plan, out: Path | None = None) -> Path:
    from meshctl.plan import default_plan_path, write_plan

    path = out or default_plan_path(ws.config.plans_dir, plan)
    return write_plan(plan, path)
