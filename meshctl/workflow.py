"""The CLI's one wiring of load -> pod IPs -> compile -> observe -> plan.

Every command that needs "the desired state of this repo against the live lab" goes through
here, so plan, apply, drift and recover agree on how the pieces fit: the lab registry gives the
pod IPs and node netns, the state gives the identity/endpoint tables, the BPF object gives the
build hash. Heavy imports (libbpf, pyroute2) happen inside functions so `--help` stays fast.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, replace
from pathlib import Path
from typing import TYPE_CHECKING, Any

from meshctl.errors import LabError, StateError
from meshctl.gcpause import paused_gc
from meshctl.nodestate import NodeState

if TYPE_CHECKING:
    from meshctl.access import ClusterAccess
    from meshctl.compile import Compiled
    from meshctl.model.config import MeshConfig
    from meshctl.plan import Plan
    from meshctl.source import DesiredState
    from meshctl.state import State

INTERRUPTED = "an apply was interrupted: run `meshctl recover`"


@dataclass(frozen=True)
class Workspace:
    """A desired repo with its lab: everything plan/apply/drift need to know up front."""

    root: Path
    desired: DesiredState  # pod IPs filled from the lab (agent driver: from the inventory)
    netns: dict[str, str]  # node -> netns of the lab node (empty with the agent driver)
    access: ClusterAccess | None = None  # how nodes are reached; None: the lab of `netns`
    files: Mapping[str, tuple[int, int]] | None = None  # the repo's files as loaded (increment.baseline)

    def __post_init__(self) -> None:
        if self.access is None:
            from meshctl.access import LabAccess

            object.__setattr__(self, "access", LabAccess(self.desired.config.cluster, self.netns))

    @property
    def nodes_access(self) -> ClusterAccess:
        """The lab or the agents (meshctl.access); observe, drive and restore nodes through it."""
        assert self.access is not None  # set in __post_init__
        return self.access

    @property
    def config(self) -> MeshConfig:
        return self.desired.config

    @property
    def cluster(self) -> str:
        return self.desired.config.cluster

    @property
    def state_dir(self) -> Path:
        return self.desired.config.state_dir

    @property
    def node_order(self) -> list[str]:
        return [n.name for n in self.desired.config.nodes]

    def pod_nodes(self) -> dict[str, str]:
        return {f"{p.namespace}/{p.name}": p.node_name for p in self.desired.pods}

    def pod_ips(self) -> dict[str, Any]:
        return {f"{p.namespace}/{p.name}": p.pod_ip for p in self.desired.pods if p.pod_ip is not None}


@paused_gc()  # a big repo is a million acyclic objects: collections would cost a second
def open_workspace(root: Path, ref: str | None = None) -> Workspace:
    """Load the desired repo and find its lab (which must be up), or with `[apply] driver =
    "agent"` its nodes' agents (no lab: pod IPs from the inventory, meshctl.access)."""
    from meshctl.increment.baseline import repo_files
    from meshctl.lab import registry
    from meshctl.source import load_desired

    files = repo_files(Path(root).resolve()) if ref is None else None  # before the load: edits meanwhile show
    desired = load_desired(root, ref)
    if desired.config.apply.driver == "agent":
        from meshctl.access import open_agent_access

        desired, access = open_agent_access(desired)
        return Workspace(Path(root), desired, {}, access)
    cluster = desired.config.cluster
    reg = registry.load(cluster)
    if reg is None:
        raise LabError(f"no lab named {cluster!r} is up: run `meshctl lab up -C {root}`")
    missing = [n.name for n in desired.config.nodes if n.name not in reg.nodes]
    if missing:
        raise LabError(
            f"lab {cluster!r} has no node(s) {', '.join(missing)}: run `meshctl lab up -C {root}` again"
        )
    desired = desired.with_pod_ips({k: p.address for k, p in reg.pods.items()})
    netns = {name: rec.netns for name, rec in reg.nodes.items()}
    return Workspace(Path(root), desired, netns, files=files)


def ensure_not_interrupted(state_dir: Path) -> None:
    """Refuse to plan or apply over the records of an apply that did not finish. While the apply
    that wrote them still runs (its lock's holder lives), say so: it is not interrupted."""
    from meshctl.state import Journal
    from meshctl.state.lock import running_holder

    if Journal(state_dir).records():
        held = running_holder(state_dir)  # waits up to --lock-timeout for it to finish
        if held is not None:
            raise StateError(f"{held.in_progress()}: {held.advice()}")
        if Journal(state_dir).records():
            raise StateError(INTERRUPTED)


def current_build() -> str:
    from meshctl.dataplane.node import build_hash, default_object_path

    return build_hash(default_object_path())


def compile_desired(ws: Workspace, state: State, build: str | None = None) -> Compiled:
    """Compile with the state's tables so identities and endpoint ids stay stable."""
    from meshctl.compile import EndpointTable, IdentityTable, compile_cluster

    identities = IdentityTable()
    endpoints = EndpointTable()
    if state.identities:
        identities = IdentityTable.from_dict(state.identities)
    if state.endpoint_ids:
        endpoints = EndpointTable.from_dict(state.endpoint_ids)
    return compile_cluster(ws.desired, identities, endpoints, build or current_build())


def tables_of(compiled: Compiled) -> tuple[dict[str, Any], dict[str, Any]]:
    return compiled.identities.as_dict(), compiled.endpoint_ids.as_dict()


def persist_tables(state_dir: Path, state: State, compiled: Compiled) -> State:
    """Save newly allocated identities/endpoint ids (numbers are never reused; serial unchanged).

    Allocation happens at plan time, like Cilium allocating an identity when an endpoint
    appears: the saved plan's targets use these numbers, so they must outlive the plan. Caller
    holds the state lock.
    """
    from meshctl.state import save_state

    identities, endpoints = tables_of(compiled)
    if identities == state.identities and endpoints == state.endpoint_ids:
        return state
    return save_state(state_dir, state.with_tables(identities, endpoints))


def observe_nodes(cluster: str, netns: Mapping[str, str], nodes: Iterable[str]) -> dict[str, NodeState]:
    """Every node's live state. The cyclic GC is paused meanwhile: decoding a million map entries
    makes only acyclic objects, and collections over the compiled state would cost seconds."""
    from meshctl.observe import observe_node

    with paused_gc():
        return {n: observe_node(cluster, n, netns[n]) for n in nodes}


def select_nodes(ws: Workspace, only: Sequence[str] = ()) -> list[str]:
    """Config order; `only` (from --node) must name nodes of the config."""
    nodes = ws.node_order
    unknown = [n for n in only if n not in nodes]
    if unknown:
        raise LabError(f"--node {', '.join(unknown)}: not a node of {ws.cluster} ({', '.join(nodes)})")
    return [n for n in nodes if not only or n in only]


@dataclass(frozen=True)
class PlanOutcome:
    plan: Plan
    compiled: Compiled
    observed: dict[str, NodeState]
    state: State


@paused_gc()  # every step makes acyclic values only; collections over them cost seconds
def make_plan(ws: Workspace, only: Sequence[str] = (), *, lock_held: bool = False,
              record: bool = False) -> PlanOutcome:
    """Compile, observe and diff; saves newly allocated table entries into the state. `record`:
    a plan that finds nothing to do leaves the baseline of incremental plans (meshctl.increment)."""
    from meshctl.audit import plan_inputs
    from meshctl.encryption.hook import with_encryption
    from meshctl.loadbalancer.hook import with_load_balancer
    from meshctl.plan import build_plan
    from meshctl.state import StateLock, load_state

    ensure_not_interrupted(ws.state_dir)
    nodes = select_nodes(ws, only)
    compiled_build = current_build()
    if lock_held:
        state = load_state(ws.state_dir)
        compiled = compile_desired(ws, state, compiled_build)
        state = persist_tables(ws.state_dir, state, compiled)
    else:
        with StateLock(ws.state_dir, "plan"):
            state = load_state(ws.state_dir)
            compiled = compile_desired(ws, state, compiled_build)
            state = persist_tables(ws.state_dir, state, compiled)
    observed = ws.nodes_access.observe_many(nodes)  # lab: observe_nodes; agent: each node's socket
    intended = {n: compiled.nodes.get(n) or NodeState(n) for n in nodes}
    intended = with_encryption(ws.config, intended, observed, access=ws.nodes_access)  # next WireGuard step
    intended = with_load_balancer(ws.desired, intended, observed)  # services (kube-proxy replacement)
    limit = ws.config.policy.impact_max_pods  # impact is pods x pods x ports verdicts: big plans skip it
    with_impact = len(ws.desired.pods) <= limit
    staged, enforcing = plan_inputs(ws.state_dir, state.staged, compiled.staged_digests,
                                    (d.title for d in compiled.spec.policies))
    plan = build_plan(
        observed, intended, compiled.catalog, desired=ws.desired, state=state,
        compiled_warnings=compiled.warnings, impact=with_impact,
        connections=ws.nodes_access.connections,  # read only on nodes whose changes can cut
        staged=staged, enforcing=enforcing,
    )
    if not with_impact and plan.has_changes:
        plan = with_impact_skipped(plan, len(ws.desired.pods), limit)
    outcome = PlanOutcome(plan, compiled, observed, state)
    if record:
        from meshctl.increment import record_baseline

        record_baseline(ws, outcome, compiled_build)
    return outcome


def with_impact_skipped(plan: Plan, pods: int, limit: int) -> Plan:
    """`plan` with the note that its connectivity impact was not computed (too many pods)."""
    from meshctl.plan import PlanWarning

    note = PlanWarning(f"connectivity impact skipped: {pods} pods (limit {limit})", severity="info")
    return replace(plan, warnings=(*plan.warnings, note))


def save_plan(ws: Workspace, plan: Plan, out: Path | None = None) -> Path:
    from meshctl.plan import default_plan_path, write_plan

    path = out or default_plan_path(ws.config.plans_dir, plan)
    return write_plan(plan, path)
