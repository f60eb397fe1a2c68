"""Drift: the live datapath against the last intent meshctl applied (from the state).

Drift is measured against what meshctl last applied, not against the repo: a repo change that
is not applied yet is a plan, not drift. With a runtime inventory (`[inventory] source = "lab"`)
what was applied is the intent each node holds compiled with the pods of now, so pods that came
and went since (which the node agents followed) are listed as churn, never as drift.

The diff runs live -> intended, so its changes are exactly what `--heal` applies; the report
words them from the node's side (an entry to create is one that went missing on the node).
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

from meshctl.catalog import Catalog
from meshctl.nodestate import ForeignProgram, NodeState
from meshctl.plan.change import describe_drift as describe
from meshctl.plan.warnings import program_warning

if TYPE_CHECKING:
    from meshctl.app.workspace import Workspace
    from meshctl.plan import Change, Plan
    from meshctl.source.runtime import Churn, RuntimeInventory
    from meshctl.state import State


@dataclass
class DriftReport:
    cluster: str
    serial: int
    nodes: dict[str, tuple[Change, ...]] = field(default_factory=dict)  # only nodes that drifted
    clean: list[str] = field(default_factory=list)
    never_applied: list[str] = field(default_factory=list)
    # programs of others on meshctl's interfaces: drift too, but heal leaves them (not meshctl's)
    programs: dict[str, tuple[ForeignProgram, ...]] = field(default_factory=dict)
    # what heal needs (not part of the report)
    observed: dict[str, NodeState] = field(default_factory=dict, repr=False)
    intended: dict[str, NodeState] = field(default_factory=dict, repr=False)
    catalog: Catalog = field(default_factory=Catalog, repr=False)
    state: State | None = field(default=None, repr=False)
    churn: Churn | None = None  # pods that came and went since the last apply: runtime, not drift

    @property
    def drifted(self) -> bool:
        return bool(self.nodes or self.programs)

    def to_json(self) -> dict[str, Any]:
        return {
            "cluster": self.cluster,
            "state_serial": self.serial,
            "drift": self.drifted,
            "nodes": {n: [describe(c) | c.to_json() for c in cs] for n, cs in self.nodes.items()},
            "clean": self.clean,
            "never_applied": self.never_applied,
            "foreign_programs": {n: [p.__dict__ for p in ps] for n, ps in self.programs.items()},
            **({"inventory_churn": self.churn.to_json()} if self.churn is not None else {}),
        }


def _catalog(ws: Workspace, state: State) -> Catalog:
    """Names for the report: compile the repo if it compiles, else show raw numbers."""
    from meshctl.dataplane.node import current_build
    from meshctl.errors import MeshctlError
    from meshctl.state.tables import compile_desired

    try:
        return compile_desired(ws.desired, state, current_build()).catalog
    except MeshctlError:
        return Catalog()


def detect_drift(ws: Workspace) -> DriftReport:
    """Compare every node of the config that meshctl applied with its last applied intent."""
    from meshctl.state.operations import measured

    with measured(ws.state_dir, "drift") as metric:  # counts and durations for the agents' /metrics
        report = _detect_drift(ws)
        metric["result"] = "drifted" if report.drifted else "clean"
        return report


def _detect_drift(ws: Workspace) -> DriftReport:
    from meshctl.app.workspace import ensure_not_interrupted
    from meshctl.plan import diff_node
    from meshctl.state import load_state

    ensure_not_interrupted(ws.state_dir)
    state = load_state(ws.state_dir)
    applied = [n for n in ws.node_order if n in state.nodes]
    intended = {n: state.nodes[n].intended for n in applied}
    runtime = ws.backend.runtime
    churn = None
    if runtime is not None:  # the pods now under the intent each node holds: churn is not drift
        intended.update(held_intents(ws, runtime, applied))
        if state.inventory_revision is not None:
            churn = runtime.churn_since(state.inventory_revision)
    report = DriftReport(
        ws.cluster, state.serial,
        never_applied=[n for n in ws.node_order if n not in state.nodes],
        observed=ws.backend.observe_many(applied),  # the lab, or each node's agent
        intended=intended,
        catalog=_catalog(ws, state),
        state=state,
        churn=churn,
    )
    for node in applied:
        changes = diff_node(report.observed[node], report.intended[node], report.catalog)
        if changes:
            report.nodes[node] = changes
        elif not report.observed[node].foreign_programs:
            report.clean.append(node)
        if report.observed[node].foreign_programs:
            report.programs[node] = report.observed[node].foreign_programs
    return report


def held_intents(ws: Workspace, runtime: RuntimeInventory, nodes: list[str]) -> dict[str, NodeState]:
    """Each node's expected state: the intent it holds compiled with the inventory as it is now.
    Nodes holding none keep their recorded state."""
    from meshctl.compile import EndpointTable, IdentityTable
    from meshctl.compile.spec import row_specs

    namespaces = {ns.name: dict(ns.labels) for ns in runtime.namespaces}
    pods = row_specs(runtime.rows)
    identities = IdentityTable.from_dict(runtime.identities)
    endpoints = EndpointTable.from_dict(runtime.endpoint_ids)
    out: dict[str, NodeState] = {}
    memo = None  # what one node's compile worked out serves the next
    for node in nodes:
        intent = ws.backend.intent(node, ws.state_dir)
        if intent is not None:
            out[node], compiled = intent.compile(node, namespaces, pods, identities, endpoints, memo)
            memo = compiled.memo
    return out


def heal_plan(report: DriftReport) -> Plan:
    """The plan that puts drifted nodes back to their last applied intent."""
    from meshctl.plan import build_plan

    nodes = list(report.nodes)
    return build_plan(
        {n: report.observed[n] for n in nodes}, {n: report.intended[n] for n in nodes},
        report.catalog, state=report.state, impact=False,
    )


def render_text(report: DriftReport) -> str:
    lines = [f"Drift of cluster {report.cluster} against the last applied intent (serial {report.serial}):"]
    for node, changes in report.nodes.items():
        lines.append(f"\n  node {node}: {len(changes)} object(s) drifted")
        for c in changes:
            lines.append(f"    {c.action.symbol} {c.address}: {describe(c)['drift']}")
            if c.reason:
                lines.append(f"        {c.reason}")
    for node, programs in report.programs.items():
        lines.append(f"\n  node {node}: {len(programs)} program(s) meshctl did not attach")
        for p in programs:
            w = program_warning(node, p)
            lines.append(f"    ! {w.summary}: {w.detail}")
    for node in report.clean:
        lines.append(f"  node {node}: no drift")
    for node in report.never_applied:
        lines.append(f"  node {node}: never applied by meshctl (nothing to compare)")
    if report.churn is not None and report.churn.any:
        lines.append(f"  inventory: {report.churn.describe()}; the node agents kept the endpoints in step "
                     "(runtime, not drift)")
    lines.append("")
    if report.drifted:
        total = sum(len(c) for c in report.nodes.values())
        if report.nodes:
            lines.append(
                f"Drift: {total} object(s) on {len(report.nodes)} node(s). "
                "`meshctl drift --heal` restores them."
            )
        if report.programs:
            count = sum(len(p) for p in report.programs.values())
            lines.append(f"Foreign programs: {count} on {len(report.programs)} node(s); --heal leaves them "
                         "(meshctl does not remove programs it did not attach).")
    else:
        lines.append("No drift: the datapath matches the last applied intent.")
    return "\n".join(lines)


def render_markdown(report: DriftReport) -> str:
    lines = [f"### meshctl drift: `{report.cluster}` (state serial {report.serial})", ""]
    if not report.drifted:
        lines.append("No drift: the datapath matches the last applied intent.")
        return "\n".join(lines) + "\n"
    lines += ["| node | object | what happened |", "|---|---|---|"]
    for node, changes in report.nodes.items():
        for c in changes:
            lines.append(f"| {node} | `{c.address}` | {describe(c)['drift']} |")
    for node, programs in report.programs.items():
        for p in programs:
            lines.append(f"| {node} | `{p.hook} {p.interface} program {p.prog_id}` | "
                         f"{program_warning(node, p).detail} |")
    return "\n".join(lines) + "\n"
