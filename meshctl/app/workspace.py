"""A desired repo opened against its cluster: everything plan, apply and drift need up front.

Every use case that needs "the desired state of this repo against the live nodes" opens a
Workspace, so plan, apply, drift and recover agree on how the pieces fit: the backend (the lab,
or the nodes' agents; chosen once, here) gives the pod IPs and reaches the nodes, the state gives
the identity and endpoint tables. Heavy imports (libbpf, pyroute2) happen inside functions so
`--help` stays fast.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from contextlib import AbstractContextManager
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

from meshctl.errors import LabError, StateError
from meshctl.gcpause import paused_gc

if TYPE_CHECKING:
    from meshctl.backend import Backend
    from meshctl.model.config import MeshConfig
    from meshctl.source import DesiredState
    from meshctl.state.cluster import ClusterState

INTERRUPTED = "an apply was interrupted: run `meshctl recover`"


@dataclass(frozen=True)
class Workspace:
    """A desired repo with the backend that reaches its nodes."""

    root: Path
    desired: DesiredState  # pod IPs (and the lab's node addresses) filled by the backend
    backend: Backend
    files: Mapping[str, tuple[int, int]] | None = None  # the repo's files as loaded (increment.baseline)

    @property
    def netns(self) -> dict[str, str]:
        """node -> netns of the lab's nodes (empty with the agents)."""
        return dict(getattr(self.backend, "netns", {}))

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

    def lock(self, operation: str) -> AbstractContextManager[Any]:
        """The local state's lock for `operation` (the backend says which kind)."""
        return self.backend.state_lock(self.state_dir, operation)

    def pod_nodes(self) -> dict[str, str]:
        return {f"{p.namespace}/{p.name}": p.node_name for p in self.desired.pods}

    def pod_ips(self) -> dict[str, Any]:
        return {f"{p.namespace}/{p.name}": p.pod_ip for p in self.desired.pods if p.pod_ip is not None}


@paused_gc()  # a big repo is a million acyclic objects: collections would cost a second
def open_workspace(root: Path, ref: str | None = None) -> Workspace:
    """Load the desired repo and open its backend: the lab (which must be up), or with
    `[apply] driver = "agent"` its nodes' agents (pod IPs from the inventory)."""
    from meshctl.app.increment.baseline import repo_files
    from meshctl.backend import open_backend
    from meshctl.source import load_desired

    files = repo_files(Path(root).resolve()) if ref is None else None  # before the load: edits meanwhile show
    desired, backend = open_backend(load_desired(root, ref))
    return Workspace(Path(root), desired, backend, files=files if backend.kind == "lab" else None)


def load_cluster_state(ws: Workspace, nodes: Sequence[str] | None = None) -> ClusterState:
    """The state as the config's nodes (or `nodes`) hold it, with the local state dir as their
    cache (meshctl.state.cluster): lineage, serial and tables come from the nodes."""
    from meshctl.state import load_state
    from meshctl.state.cluster import merge_shares

    asked = ws.node_order if nodes is None else nodes
    return merge_shares(load_state(ws.state_dir), ws.backend.shares(asked, ws.state_dir))


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


def select_nodes(ws: Workspace, only: Sequence[str] = ()) -> list[str]:
    """Config order; `only` (from --node) must name nodes of the config."""
    nodes = ws.node_order
    unknown = [n for n in only if n not in nodes]
    if unknown:
        raise LabError(f"--node {', '.join(unknown)}: not a node of {ws.cluster} ({', '.join(nodes)})")
    return [n for n in nodes if not only or n in only]
