"""`meshctl status`: one look at the cluster, like `cilium status`.

Gathers facts only (nodes, programs and their build, map fill, agents, last apply, drift);
the CLI renders them. Each node is read independently: a broken node says why and the others
still report.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path

from meshctl.errors import MeshctlError

FILL_MAPS = ("endpoints", "ipcache", "policy_maps", "ct", "metrics")


@dataclass(frozen=True)
class MapFill:
    name: str
    entries: int
    capacity: int

    @property
    def percent(self) -> float:
        return 100.0 * self.entries / self.capacity if self.capacity else 0.0


@dataclass
class NodeStatus:
    name: str
    netns: str | None = None
    loaded_build: str | None = None
    attachments: int = 0
    endpoints: int = 0
    maps: list[MapFill] = field(default_factory=list)
    agent_pid: int | None = None
    drift: str = "unknown"  # yes | no | unknown (never applied) | error text
    error: str = ""


@dataclass
class ClusterStatus:
    cluster: str
    current_build: str | None
    nodes: list[NodeStatus]
    state_serial: int
    last_plan_id: str | None
    last_applied_at: str | None
    encryption: str = "disabled"
    load_balancer: str = "disabled"

    @property
    def ok(self) -> bool:
        return all(not n.error and n.loaded_build for n in self.nodes)


def _map_fill(pin_dir: Path) -> list[MapFill]:
    from meshctl.dataplane.libbpf import Map

    out = []
    for name in FILL_MAPS:
        path = pin_dir / name
        if not path.exists():
            continue
        with Map.from_pin(path) as m:
            out.append(MapFill(name, sum(1 for _ in m), m.info().max_entries))
    return out


def node_status(cluster: str, node: str, netns: str | None, record_fingerprint: str | None) -> NodeStatus:
    from meshctl.dataplane.node import NodeDatapath

    st = NodeStatus(node, netns)
    try:
        dp = NodeDatapath(cluster, node, netns)
        if not dp.exists():
            st.error = "no datapath loaded"
            return st
        st.loaded_build = dp.pinned_build()
        st.attachments = len(dp.link_pins())
        st.maps = _map_fill(dp.pin_dir)
        st.endpoints = next((m.entries for m in st.maps if m.name == "endpoints"), 0)
        if record_fingerprint is None:
            st.drift = "unknown (never applied)"
        elif netns is not None:
            from meshctl.observe import observe_node

            live = observe_node(cluster, node, netns).fingerprint()
            st.drift = "yes" if live != record_fingerprint else "no"
    except MeshctlError as err:
        st.error = str(err)
    return st


def cluster_status(repo: Path) -> ClusterStatus:
    from meshctl.flows.context import repo_info
    from meshctl.lab import agents, registry
    from meshctl.state import load_state

    info = repo_info(repo)
    try:
        from meshctl.workflow import current_build

        build: str | None = current_build()
    except MeshctlError:
        build = None
    reg = registry.load(info.cluster)
    state = load_state(info.state_dir)
    running = agents.running(info.cluster)
    nodes = []
    for name in info.nodes:
        netns = reg.nodes[name].netns if reg and name in reg.nodes else None
        rec = state.nodes.get(name)
        st = node_status(info.cluster, name, netns, rec.fingerprint if rec else None)
        st.agent_pid = running.get(name)
        nodes.append(st)
    return ClusterStatus(info.cluster, build, nodes, state.serial, state.last_plan_id, state.last_applied_at)
