"""`meshctl status`: one look at the cluster, like `cilium status`.

Gathers facts only (nodes, programs and their build, map fill, agents, last apply, drift);
the CLI renders them. Each node is read independently: a broken node says why and the others
still report. Drift is `meshctl drift`'s own computation (meshctl.app.drift.detect_drift:
live datapath against the desired state at HEAD), so status and drift never disagree.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any

from meshctl.errors import MeshctlError

log = logging.getLogger(__name__)

if TYPE_CHECKING:
    from meshctl.backend.agents import AgentBackend

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
    drift: str = "unknown"  # yes (changed on the node) | not applied | no | never applied | unknown (<why>)
    drift_objects: int = 0  # how many objects differ from the last applied intent
    foreign_programs: list[str] = field(default_factory=list)  # programs of others on its interfaces
    error: str = ""
    learned_ips: int = 0  # IPs its DNS proxy learned for toFQDNs (runtime state: `meshctl fqdn cache list`)
    agent: str = ""  # agent driver: "up (unix:<socket>)" | "down"; lab: see agent_pid


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
    # staged (audit-mode) policies the last applies loaded: "Kind ns/name" -> since (ISO time)
    staged: dict[str, str] = field(default_factory=dict)

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


def node_status(cluster: str, node: str, netns: str | None) -> NodeStatus:
    """Programs, build and map fill of one node (drift comes from `drift_by_node`)."""
    from meshctl.dataplane.dnsproxy import DnsFiles, fqdn_cache
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
        st.learned_ips = len(fqdn_cache(DnsFiles.of(cluster, node)))
    except MeshctlError as err:
        st.error = str(err)
    return st


def agent_node_status(access: AgentBackend, node: str) -> NodeStatus:
    """One node as its agent reports it (`[apply] driver = "agent"`): no lab, no local maps.

    The build is the one its attached programs carry; map fill counts the observed entries
    against the datapath's map sizes (the maps the agent reads are those it manages)."""
    from meshctl.dataplane import structs as S

    where = access.endpoint(node)
    st = NodeStatus(node, agent=f"up ({where})" if not isinstance(where, Path) else f"up (unix:{where})")
    try:
        state = access.observe(node)
    except MeshctlError as err:
        st.agent, st.error = "down", str(err)
        return st
    builds = sorted({a.build for a in state.attachments})
    st.loaded_build = builds[0] if len(builds) == 1 else None
    if len(builds) > 1:
        st.error = f"{len(builds)} different builds attached"
    elif not builds:
        st.error = "no programs attached (no pods on this node, or no datapath loaded)"
    st.attachments = len(state.attachments)
    st.endpoints = len(state.endpoints)
    st.maps = [
        MapFill("endpoints", len(state.endpoints), S.ENDPOINTS_MAP_SIZE),
        MapFill("ipcache", len(state.ipcache), S.IPCACHE_MAP_SIZE),
        MapFill("policy_maps", len(state.policies), S.POLICY_OUTER_MAP_SIZE),
    ]
    try:
        st.learned_ips = len(access.fqdn_cache([node])[node])
    except MeshctlError as err:  # an agent without the route: the rest of its status stands
        log.info("status %s: no learned IPs (%s)", node, err)
    return st


def drift_by_node(repo: Path, nodes: list[str]) -> dict[str, tuple[str, int, list[str]]]:
    """node -> ("yes" | "no" | "unknown (...)", objects drifted, foreign programs), from
    detect_drift."""
    from meshctl.app.drift import detect_drift, open_drift_workspace
    from meshctl.plan.warnings import program_warning

    try:
        report = detect_drift(*open_drift_workspace(repo))
    except MeshctlError as err:
        return {n: (f"unknown ({err})", 0, []) for n in nodes}
    programs = {n: [program_warning(n, p).detail for p in ps] for n, ps in report.programs.items()}
    out = {n: ("yes" if report.changed_on_node(n) else "not applied", len(changes), programs.get(n, []))
           for n, changes in report.nodes.items()}
    out.update({n: ("yes", 0, ps) for n, ps in programs.items() if n not in out})
    out.update({n: ("no", 0, []) for n in report.clean})
    out.update({n: ("never applied", len(report.nodes.get(n, ())), []) for n in report.never_applied})
    out.update({n: (f"unknown (not checked: {why})", 0, []) for n, why in report.unread.items()})
    return out


def cluster_status(repo: Path) -> ClusterStatus:
    from meshctl.backend.lab import find_lab, lab_agent_pids
    from meshctl.flows.context import repo_info
    from meshctl.state import load_state

    info = repo_info(repo)
    access = _agent_access(repo)
    if access is not None:  # a real cluster: every node through its agent, no lab
        return _agent_cluster_status(repo, info, access)
    build = _current_build()
    lab = find_lab(info.cluster)
    state = load_state(info.state_dir)
    running = lab_agent_pids(info.cluster)
    nodes = []
    drift = drift_by_node(repo, list(info.nodes)) if lab is not None else {}
    for name in info.nodes:
        netns = lab.netns.get(name) if lab is not None else None
        st = node_status(info.cluster, name, netns)
        st.agent_pid = running.get(name)
        st.drift, st.drift_objects, st.foreign_programs = drift.get(name, ("unknown (no lab)", 0, []))
        nodes.append(st)
    enc, lb = _settings(repo)
    return ClusterStatus(info.cluster, build, nodes, state.serial, state.last_plan_id, state.last_applied_at,
                         enc, lb, {p: r["since"] for p, r in sorted(state.staged.items())})


def _current_build() -> str | None:
    from meshctl.dataplane.node import current_build

    try:
        return current_build()
    except MeshctlError:
        return None


def _agent_access(repo: Path) -> AgentBackend | None:
    """The nodes' agents when meshctl.toml says `[apply] driver = "agent"`, else None (the lab)."""
    from meshctl.backend.agents import agents_of
    from meshctl.source.config import CONFIG_FILE, parse_config

    cfg = parse_config((Path(repo) / CONFIG_FILE).read_text(), Path(repo).resolve())
    if cfg.apply.driver != "agent":
        return None
    return agents_of(cfg)


def _agent_cluster_status(repo: Path, info: Any, access: AgentBackend) -> ClusterStatus:
    from meshctl.state import load_state

    build = _current_build()
    state = load_state(info.state_dir)
    drift = drift_by_node(repo, list(info.nodes))
    nodes = []
    for name in info.nodes:
        st = agent_node_status(access, name)
        st.drift, st.drift_objects, st.foreign_programs = drift.get(name, ("unknown", 0, []))
        nodes.append(st)
    enc, lb = _settings(repo)
    return ClusterStatus(info.cluster, build, nodes, state.serial, state.last_plan_id, state.last_applied_at,
                         enc, lb, {p: r["since"] for p, r in sorted(state.staged.items())})


def _settings(repo: Path) -> tuple[str, str]:
    """How meshctl.toml sets encryption and the load balancer, in words."""
    from meshctl.source.config import CONFIG_FILE, parse_config

    cfg = parse_config((Path(repo) / CONFIG_FILE).read_text(), Path(repo).resolve())
    e, lb = cfg.encryption, cfg.load_balancer
    enc = "disabled" if not e.enabled else (
        f"{e.type} (port {e.listen_port}{', strict' if e.strict_mode else ''}"
        f"{', node-to-node' if e.node_encryption else ''})")
    lbs = "disabled" if not lb.kube_proxy_replacement else (
        f"kube-proxy replacement ({lb.mode}, {lb.algorithm})")
    return enc, lbs
