"""Drift: the live nodes against the desired state at a git revision, the way Argo CD compares.

The reference is the repo at a revision (default: HEAD; the working tree when the repo is not in
git), compiled as a plan compiles it, with the pods of now when the cluster is the inventory, so
pods that came and went (which the node agents followed) are churn, never drift. Each difference
is told by its cause: changed on the node outside meshctl, or not applied yet (the node is as the
last apply left it, and the desired state moved on). A node that could not be read is named as
not checked, never as clean: the command exits 1 then.

The diff runs live -> desired, so its changes are exactly what `--heal` applies (the drift plan
itself); the report words them from the node's side.
"""

from __future__ import annotations

import json
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any

from meshctl.errors import MeshctlError
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
    revision: str = "the working tree"  # what the nodes were compared with, in words
    nodes: dict[str, tuple[Change, ...]] = field(default_factory=dict)  # only nodes that drifted
    clean: list[str] = field(default_factory=list)
    never_applied: list[str] = field(default_factory=list)
    unread: dict[str, str] = field(default_factory=dict)  # node -> why it could not be checked
    # per drifted node, the changes (change_id) whose live value is what the last apply left there:
    # the desired state moved on (not applied yet); the others were changed on the node
    ahead: dict[str, frozenset[str]] = field(default_factory=dict)
    # programs of others on meshctl's interfaces: drift too, but heal leaves them (not meshctl's)
    programs: dict[str, tuple[ForeignProgram, ...]] = field(default_factory=dict)
    churn: Churn | None = None  # pods that came and went since the last apply: runtime, not drift
    mixed_serials: str | None = None
    plan: Plan | None = field(default=None, repr=False)  # what heal applies

    @property
    def drifted(self) -> bool:
        return bool(self.nodes or self.programs)

    @property
    def checked(self) -> bool:
        """Every node of the config was read."""
        return not self.unread

    def is_ahead(self, node: str, change: Change) -> bool:
        return change_id(change) in self.ahead.get(node, ())

    def words(self, node: str, change: Change) -> str:
        return describe(change, self.is_ahead(node, change))["drift"]

    def changed_on_node(self, node: str) -> bool:
        """Something on `node` was changed outside meshctl (not only a desired state not applied)."""
        changes = self.nodes.get(node, ())
        return bool(self.programs.get(node)) or any(not self.is_ahead(node, c) for c in changes)

    def to_json(self) -> dict[str, Any]:
        return {
            "cluster": self.cluster,
            "state_serial": self.serial,
            "revision": self.revision,
            "drift": self.drifted,
            "nodes": {n: [{"drift": self.words(n, c), "cause": "desired" if self.is_ahead(n, c) else "node"}
                          | c.to_json() for c in cs]
                      for n, cs in self.nodes.items()},
            "clean": self.clean,
            "never_applied": self.never_applied,
            "not_checked": self.unread,
            "foreign_programs": {n: [p.__dict__ for p in ps] for n, ps in self.programs.items()},
            **({"inventory_churn": self.churn.to_json()} if self.churn is not None else {}),
            **({"mixed_serials": self.mixed_serials} if self.mixed_serials else {}),
        }


def drift_ref(root: Path, ref: str | None) -> str | None:
    """The revision to compare with: `ref`, else HEAD when `root` is in a git repository, else
    None (the working tree)."""
    if ref is not None:
        return ref
    import git

    try:
        git.Repo(root, search_parent_directories=True)
    except (git.InvalidGitRepositoryError, git.NoSuchPathError):
        return None
    return "HEAD"


def open_drift_workspace(root: Path, ref: str | None = None) -> tuple[Workspace, str | None]:
    """The repo at the revision drift compares with (drift_ref), and that revision."""
    from meshctl.app.workspace import open_workspace

    rev = drift_ref(Path(root), ref)
    return open_workspace(root, rev), rev


def detect_drift(ws: Workspace, ref: str | None = None) -> DriftReport:
    """Compare every node of the config with the desired state of `ws` (opened at `ref`)."""
    from meshctl.state.operations import measured

    with measured(ws.state_dir, "drift") as metric:  # counts and durations for the agents' /metrics
        report = _detect_drift(ws, ref)
        metric["result"] = "drifted" if report.drifted else ("clean" if report.checked else "unchecked")
        return report


def _detect_drift(ws: Workspace, ref: str | None) -> DriftReport:
    from meshctl.app.plan import make_plan
    from meshctl.app.workspace import ensure_not_interrupted

    ensure_not_interrupted(ws.state_dir)
    observed, unread = read_nodes(ws)
    outcome = make_plan(ws, observed=observed, impact=False)
    state = outcome.state
    runtime = ws.backend.runtime
    churn = None
    if runtime is not None and state.inventory_revision is not None:
        churn = runtime.churn_since(state.inventory_revision)
    report = DriftReport(
        ws.cluster, state.serial, _revision_words(ws, ref),
        never_applied=[n for n in observed if n not in state.nodes],
        unread=unread, churn=churn, plan=outcome.plan, mixed_serials=outcome.mixed_serials,
    )
    changed = [n.node for n in outcome.plan.nodes if n.changes and n.node in state.nodes]
    last = last_applied(ws, state, runtime, changed)  # only drifted nodes need telling apart
    for node_plan in outcome.plan.nodes:
        node, live = node_plan.node, observed[node_plan.node]
        if node_plan.changes:
            report.nodes[node] = node_plan.changes
            report.ahead[node] = _ahead(node_plan.changes, live, last.get(node))
        elif not live.foreign_programs:
            report.clean.append(node)
        if live.foreign_programs:
            report.programs[node] = live.foreign_programs
    return report


def read_nodes(ws: Workspace) -> tuple[dict[str, NodeState], dict[str, str]]:
    """(node -> live state, node -> why it could not be read): every node is asked, in parallel
    first; when one fails, one by one, so the others are still checked."""
    try:
        return ws.backend.observe_many(ws.node_order), {}
    except MeshctlError:
        pass
    observed, unread = {}, {}
    for node in ws.node_order:
        try:
            observed[node] = ws.backend.observe(node)
        except MeshctlError as err:
            unread[node] = str(err)
    return observed, unread


def change_id(change: Change) -> str:
    """What a change is about, whatever the names in its address (peers are named for people)."""
    return f"{change.kind.value} {json.dumps(change.key, sort_keys=True, default=str)}"


def _ahead(changes: tuple[Change, ...], live: NodeState, last: NodeState | None) -> frozenset[str]:
    """The changes whose live value is the last applied one: the desired state moved on."""
    from meshctl.plan import diff_node

    if last is None:
        return frozenset(change_id(c) for c in changes)  # never applied: nothing was changed by hand
    by_hand = {change_id(c) for c in diff_node(live, last)}
    return frozenset(i for i in map(change_id, changes) if i not in by_hand)


def last_applied(ws: Workspace, state: State, runtime: RuntimeInventory | None,
                 nodes: list[str]) -> dict[str, NodeState]:
    """What the last apply left on each node: its record, or with a runtime inventory the
    intent the node holds compiled with the pods of now (pods the agents followed since)."""
    out = {n: state.nodes[n].intended for n in nodes}
    if runtime is not None:
        out.update(held_intents(ws, runtime, nodes))
    return out


def held_intents(ws: Workspace, runtime: RuntimeInventory, nodes: list[str]) -> dict[str, NodeState]:
    """Each node's expected state: the intent it holds compiled with the inventory as it is now.
    Nodes holding none are left out."""
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


def _revision_words(ws: Workspace, ref: str | None) -> str:
    commit = (ws.desired.commit or "")[:12]
    if ref is None:
        return "the working tree" + (f" (commit {commit}, uncommitted changes)" if ws.desired.dirty else "")
    return f"{ref} (commit {commit})" if commit and commit != ref else ref


def heal_plan(report: DriftReport) -> Plan:
    """The plan that puts the drifted nodes at the desired state: the drift's own plan."""
    assert report.plan is not None
    return report.plan


def render_text(report: DriftReport) -> str:
    lines = [f"Drift of cluster {report.cluster} against the desired state at {report.revision}, "
             f"state serial {report.serial}:"]
    for node, changes in report.nodes.items():
        lines.append(f"\n  node {node}: {len(changes)} object(s) drifted")
        for c in changes:
            lines.append(f"    {c.action.symbol} {c.address}: {report.words(node, c)}")
            if c.reason:
                lines.append(f"        {c.reason}")
    for node, programs in report.programs.items():
        lines.append(f"\n  node {node}: {len(programs)} program(s) meshctl did not attach")
        for p in programs:
            w = program_warning(node, p)
            lines.append(f"    ! {w.summary}: {w.detail}")
    for node in report.clean:
        if node not in report.never_applied:
            lines.append(f"  node {node}: no drift")
        else:
            lines.append(f"  node {node}: never applied by meshctl, and nothing to apply")
    for node, why in report.unread.items():
        lines.append(f"  node {node}: NOT CHECKED: {why}")
    if report.churn is not None and report.churn.noteworthy:
        lines.append(f"  inventory: {report.churn.describe()}; the node agents kept the endpoints in step "
                     "(runtime, not drift)")
    if report.mixed_serials:
        lines.append(f"  state: {report.mixed_serials}")
    lines.append("")
    if report.drifted:
        total = sum(len(c) for c in report.nodes.values())
        if report.nodes:
            ahead = sum(report.is_ahead(n, c) for n, cs in report.nodes.items() for c in cs)
            lines.append(
                f"Drift: {total} object(s) on {len(report.nodes)} node(s): {ahead} not applied yet, "
                f"{total - ahead} changed on the nodes. `meshctl drift --heal` applies the desired state."
            )
        if report.programs:
            count = sum(len(p) for p in report.programs.values())
            lines.append(f"Foreign programs: {count} on {len(report.programs)} node(s); --heal leaves them "
                         "(meshctl does not remove programs it did not attach).")
    elif report.checked:
        lines.append("No drift: the datapath matches the desired state.")
    else:
        lines.append(f"No drift on the {len(report.clean)} node(s) read.")
    if report.unread:
        lines.append(f"Not checked: {len(report.unread)} node(s) could not be read "
                     f"({', '.join(report.unread)}).")
    return "\n".join(lines)


def render_markdown(report: DriftReport) -> str:
    lines = [f"### meshctl drift: `{report.cluster}` against {report.revision} "
             f"(state serial {report.serial})", ""]
    for node, why in report.unread.items():
        lines.append(f"- **node {node} not checked**: {why}")
    if report.unread:
        lines.append("")
    if not report.drifted:
        lines.append("No drift: the datapath matches the desired state." if report.checked
                     else f"No drift on the {len(report.clean)} node(s) read.")
        return "\n".join(lines) + "\n"
    lines += ["| node | object | what happened |", "|---|---|---|"]
    for node, changes in report.nodes.items():
        for c in changes:
            lines.append(f"| {node} | `{c.address}` | {report.words(node, c)} |")
    for node, programs in report.programs.items():
        for p in programs:
            lines.append(f"| {node} | `{p.hook} {p.interface} program {p.prog_id}` | "
                         f"{program_warning(node, p).detail} |")
    return "\n".join(lines) + "\n"
