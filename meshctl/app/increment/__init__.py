"""Incremental plans: after a full plan found every node as compiled, plan an edit by its reach.

A reviewer who changes one policy of 10,000 pods should not wait for the cluster to be compiled
and read again. A full plan with nothing to do records a baseline (meshctl.app.increment.baseline);
`meshctl plan` then finds the files edited since (size and mtime), recompiles only the classes
of endpoints the edited policies select before or after the edit (meshctl.app.increment.replan),
reads of each node only the endpoints map and those endpoints' policy maps, and builds the plan
with the same build_plan as a full plan: the two plans are equal (property-tested), as long as
the nodes still hold what the baseline found. The rest is not read: drift there is what
`meshctl drift` and `meshctl plan --full` find, and what makes apply refuse the plan as stale
(apply compares every node's whole fingerprint). Anything the baseline cannot answer (an edit
outside policy files, a new CIDR prefix, a live map of unexpected form) plans in full.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

from meshctl.app.increment import baseline as bl
from meshctl.gcpause import paused_gc

if TYPE_CHECKING:
    from meshctl.app.plan import PlanOutcome
    from meshctl.app.workspace import Workspace
    from meshctl.plan import Plan


@dataclass(frozen=True)
class Incremental:
    plan: Plan
    files: int  # policy files edited since the baseline
    read: int  # policy maps read
    endpoints: int  # endpoints of the cluster

    @property
    def summary(self) -> str:
        noun = "file" if self.files == 1 else "files"
        return (f"Planned incrementally: {self.files} policy {noun} edited since the last full plan; "
                f"read {self.read} of {self.endpoints} endpoints' policy maps (plan --full reads them all)")


@paused_gc()  # a baseline is a million acyclic values, and so is the plan made of it (make_plan too)
def incremental_plan(root: Path) -> Incremental | None:
    """The plan of the repo at `root` from its baseline, or None: plan in full."""
    from meshctl.app.increment.stubs import NeedsFullPlan
    from meshctl.errors import MeshctlError

    base = bl.load(root)
    if base is None:
        return None
    try:
        return _plan(Path(root).resolve(), base)
    except (NeedsFullPlan, MeshctlError):
        return None  # the full plan decides, and words any error with file and line


def _plan(root: Path, base: dict[str, Any]) -> Incremental | None:
    from meshctl.app.increment.replan import replan, with_live
    from meshctl.app.plan import with_impact_skipped
    from meshctl.app.workspace import ensure_not_interrupted
    from meshctl.backend.lab import LabBackend
    from meshctl.dataplane.node import current_build
    from meshctl.plan import build_plan
    from meshctl.source.worktree import worktree_commit
    from meshctl.state import State, StateLock, load_state
    from meshctl.state.store import STATE_FILE

    files = bl.repo_files(root)
    known: dict[str, tuple[int, int]] = base["files"]
    edited = sorted(rel for rel in files.keys() | known.keys() if files.get(rel) != known.get(rel))
    if bl.CONFIG_FILE in edited:
        return None
    build, registry, lineage, serial = base["stamps"]
    lab = LabBackend(base["cluster"], base["netns"])
    if registry != bl.stamp(lab.registry_file()) or build != current_build():
        return None
    state_dir = Path(base["state_dir"])
    with StateLock(state_dir, "plan"):
        ensure_not_interrupted(state_dir)
        if bl.stamp(state_dir / STATE_FILE) == base["state_stamp"]:
            state = State(lineage=lineage, serial=serial)  # the plan records these two
        else:
            state = load_state(state_dir)
    if (state.lineage, state.serial) != (lineage, serial) or state.staged:
        return None

    def read(rel: str) -> str | None:
        path = root / rel
        return path.read_text() if path.is_file() else None

    replanned = replan(base, {rel: read(rel) for rel in edited}, read, base["audit_namespaces"])
    if replanned is None:
        return None
    observed = {}
    for node, state_then in replanned.baseline.items():
        touched = replanned.touched[node]
        addresses = {ep: ip for ep, (ip, _) in touched.items()}
        live = lab.observe_endpoints(node, addresses)
        if live.foreign:
            return None
        observed[node] = with_live(state_then, touched, live.endpoints, live.policies)
    commit, dirty = worktree_commit(root)
    plan = build_plan(
        observed, replanned.intended, replanned.catalog, desired=_Source(commit, dirty), state=state,
        compiled_warnings=replanned.warnings, impact=False,
        pods=replanned.pods,
        connections=lab.connections,
    )
    if plan.has_changes:
        plan = with_impact_skipped(plan, base["pods"], base["impact_max_pods"])
    read_maps = sum(len(t) for t in replanned.touched.values())
    return Incremental(plan, len(edited), read_maps, len(replanned.pods))


@dataclass(frozen=True)
class _Source:
    """What a plan records of the desired repo (a DesiredState's commit and dirty flag)."""

    commit: str | None
    dirty: bool


def record_baseline(ws: Workspace, outcome: PlanOutcome, build: str) -> bool:
    """Record the baseline of a full plan of the whole cluster that found nothing to do, when
    the incremental plans can use it. A plan with changes keeps the baseline only while the nodes
    are as the baseline found them; a plan of another revision or of some nodes leaves it as it
    is. True when recorded."""
    desired, compiled, plan = ws.desired, outcome.compiled, outcome.plan
    impact_max_pods = ws.config.policy.impact_max_pods
    if ws.files is None or set(outcome.observed) != set(ws.node_order):
        return False
    if plan.has_changes:
        # The edits since the baseline: it stays while the nodes are still as it found them.
        base = bl.load(ws.root)
        found = {n.node: n.observed_fingerprint for n in plan.nodes}
        if base is None or base.get("fingerprints") != found:
            bl.forget(ws.root)
        return False
    from meshctl.backend.lab import LabBackend

    lab = ws.backend
    usable = (
        len(desired.pods) > impact_max_pods
        and not outcome.state.staged
        and not any(d.staged for d in compiled.spec.policies)
        and bl.eligible(outcome.observed, compiled.nodes)
    )
    # incremental plans read the lab's maps; a runtime inventory's plans carry the nodes' intent
    if not usable or not isinstance(lab, LabBackend) or lab.runtime is not None:
        bl.forget(ws.root)
        return False
    from meshctl.state.store import STATE_FILE

    state = outcome.state
    stamps = bl.Stamps(build, bl.stamp(lab.registry_file()), state.lineage, state.serial)
    titles: dict[str, list[str]] = {rel: [] for rel in ws.files if rel != bl.CONFIG_FILE}
    for doc in compiled.spec.policies:
        if doc.source is not None:
            titles.setdefault(doc.source.file, []).append(doc.title)
    mixed = {x.source.file for x in (*desired.namespaces, *desired.pods, *desired.checks, *desired.services)}
    data = bl.record(compiled, stamps, ws.files, titles, mixed)
    data.update(
        state_dir=str(ws.state_dir), netns=dict(ws.netns), pods=len(desired.pods),
        impact_max_pods=impact_max_pods, audit_namespaces=list(ws.config.policy.audit_namespaces),
        fingerprints={n.node: n.observed_fingerprint for n in plan.nodes},
        state_stamp=bl.stamp(ws.state_dir / STATE_FILE),
    )
    return bl.save(ws.root, data)


__all__ = ["Incremental", "incremental_plan", "record_baseline"]
