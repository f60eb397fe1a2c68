"""The lab backend: the embedded cluster of network namespaces on this host.

The only reader of the lab registry above the lab itself: it gives the node netns, the pod IPs
and the nodes' underlay addresses once, when a workspace opens. Node states are read straight
from the pinned maps in each node's netns; checks connect from the pods' netns; the drop gate
reads the stores of the agents `meshctl lab up` started.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping, Sequence
from contextlib import AbstractContextManager
from dataclasses import replace
from ipaddress import IPv4Address
from pathlib import Path
from typing import TYPE_CHECKING, Any

from meshctl.errors import LabError
from meshctl.gcpause import paused_gc

if TYPE_CHECKING:
    from meshctl.apply.engine import CheckRunner, FlowDropSource, Journal, NodeDriver
    from meshctl.compile.intent import NodeIntent
    from meshctl.connections import TrackedConnection
    from meshctl.dataplane.dnsproxy import CachedIp
    from meshctl.lab.registry import PodRecord as LabPod
    from meshctl.lab.registry import Registry
    from meshctl.nodestate import NodeState, WireguardState
    from meshctl.observe import EndpointMaps
    from meshctl.source import DesiredState
    from meshctl.source.runtime import RuntimeInventory
    from meshctl.state import State


class LabBackend:
    """The lab of `cluster`: node -> netns from its registry."""

    kind = "lab"

    def __init__(self, cluster: str, netns: Mapping[str, str],
                 underlay: Mapping[str, str] | None = None) -> None:
        self.cluster, self.netns = cluster, dict(netns)
        self.underlay_names = dict(underlay or {})  # underlay address -> node: names WireGuard peers
        self.runtime: RuntimeInventory | None = None  # open_lab sets it (the lab's inventory store)

    @property
    def nodes(self) -> frozenset[str]:
        return frozenset(self.netns)

    def describe(self) -> str:
        return f"the lab of {self.cluster}"

    def observe(self, node: str) -> NodeState:
        from meshctl.observe import observe_node

        state = observe_node(self.cluster, node, self.netns[node])
        named = self._named(state.encryption)
        return state if named is state.encryption else replace(state, encryption=named)

    def observe_many(self, nodes: Iterable[str]) -> dict[str, NodeState]:
        """Every node's live state. The cyclic GC is paused meanwhile: decoding a million map
        entries makes only acyclic objects, and collections over the compiled state cost seconds."""
        with paused_gc():
            return {n: self.observe(n) for n in nodes}

    def observe_endpoints(self, node: str, endpoints: Mapping[int, IPv4Address]) -> EndpointMaps:
        """Only the endpoint entries and policy maps of `endpoints` (incremental plans)."""
        from meshctl.observe import observe_endpoint_maps

        return observe_endpoint_maps(self.cluster, node, self.netns[node], endpoints)

    def wireguard(self, nodes: Iterable[str]) -> dict[str, WireguardState]:
        """WireGuard only: cheaper than observing the nodes' maps."""
        from meshctl.nodestate import NO_ENCRYPTION
        from meshctl.observe.wireguard import observe_wireguard

        return {n: self._named(observe_wireguard(self.cluster, n, self.netns[n])) if n in self.netns
                else NO_ENCRYPTION for n in nodes}

    def _named(self, wg: WireguardState) -> WireguardState:
        """Peers named after the lab node at their endpoint (names are for people only)."""
        from meshctl.nodestate import FrozenMap

        if not wg.peers or not self.underlay_names:
            return wg
        peers = {k: replace(p, name=self.underlay_names.get(p.endpoint.rsplit(":", 1)[0], ""))
                 for k, p in wg.peers.items()}
        return replace(wg, peers=FrozenMap(peers))

    def connections(self, nodes: Iterable[str]) -> dict[str, tuple[TrackedConnection, ...]]:
        from meshctl.observe.conntrack import observe_connections

        return {n: observe_connections(self.cluster, n, self.netns[n]) for n in nodes}

    def fqdn_cache(self, nodes: Iterable[str]) -> dict[str, list[CachedIp]]:
        from meshctl.dataplane.dnsproxy import DnsFiles, fqdn_cache

        return {n: fqdn_cache(DnsFiles.of(self.cluster, n)) for n in nodes}

    def fqdn_clean(self, nodes: Iterable[str], pattern: str) -> dict[str, list[str]]:
        from meshctl.dataplane.dnsproxy import DnsFiles, clean_cache

        return {n: clean_cache(DnsFiles.of(self.cluster, n), pattern) for n in nodes}

    def state_lock(self, state_dir: Path, operation: str) -> AbstractContextManager[Any]:
        from meshctl.state import StateLock

        return StateLock(state_dir, operation)

    def driver(self, plan_id: str = "", hold: Sequence[str] = ()) -> NodeDriver:
        from meshctl.apply.driver import LabDriver

        return LabDriver(self.cluster, self.netns)

    def journal(self, state_dir: Path, plan_id: str) -> Journal:
        from meshctl.state import Journal as StateJournal

        return StateJournal(state_dir, plan_id)

    def end_apply(self, driver: NodeDriver, applied: Iterable[str]) -> list[str]:
        return []  # this host wrote the nodes: nothing holds them

    def check_runner(self, driver: NodeDriver, pod_nodes: Mapping[str, str],
                     pod_ips: Mapping[str, IPv4Address], state_dir: Path) -> CheckRunner:
        from meshctl.lab.verify import LabCheckRunner

        return LabCheckRunner(self.cluster, pod_ips, state_dir=state_dir, pod_nodes=pod_nodes)

    def drop_source(self, driver: NodeDriver, pod_ips: Mapping[str, IPv4Address],
                    state_dir: Path) -> FlowDropSource:
        from meshctl.lab.verify import lab_drop_source

        return lab_drop_source(self.cluster, state_dir, pod_ips)

    def restore(self, node: str, before: NodeState) -> None:
        from meshctl.apply.engine import restore_node

        restore_node(self.driver(), node, before)

    def pods(self) -> dict[str, LabPod]:
        """The lab's pods with their netns and ports (`connectivity test` connects from them)."""
        from meshctl.lab.registry import lab_pods

        return lab_pods(self.cluster)

    def uninstall(self, node: str, state_dir: Path) -> NodeState:
        from meshctl.agentapi.applied import clear_share
        from meshctl.agentapi.endpoints import agent_dir
        from meshctl.apply.driver import LabDriver

        before = LabDriver(self.cluster, self.netns).uninstall(node)
        clear_share(agent_dir(state_dir, node))
        return before

    def shares(self, nodes: Iterable[str], state_dir: Path) -> dict[str, State | None]:
        """Read where each node's lab agent keeps its files (<state>/agents/<node>)."""
        from meshctl.agentapi.applied import read_share
        from meshctl.agentapi.endpoints import agent_dir
        from meshctl.state.cluster import share_of

        out: dict[str, State | None] = {}
        for node in nodes:
            try:
                raw = read_share(agent_dir(state_dir, node))
                out[node] = None if raw is None else share_of(raw, node)
            except ValueError as err:
                raise LabError(f"node {node}: its share of the state is unreadable ({err}); "
                               "apply again") from err
        return out

    def record_share(self, node: str, share: dict[str, Any], state_dir: Path) -> None:
        from meshctl.agentapi.applied import write_share
        from meshctl.agentapi.endpoints import agent_dir

        write_share(agent_dir(state_dir, node), share)

    def intent(self, node: str, state_dir: Path) -> NodeIntent | None:
        from meshctl.agentapi.endpoints import agent_dir, read_intent

        try:
            return read_intent(agent_dir(state_dir, node))
        except ValueError as err:
            raise LabError(f"node {node}: its intent is unreadable ({err}); apply again") from err

    def record_intent(self, node: str, intent: NodeIntent, state_dir: Path) -> None:
        """Where the node's lab agent reads it (`meshctl agent -C REPO` keeps its node's files
        under <state>/agents/<node>)."""
        from meshctl.agentapi.endpoints import agent_dir, write_intent

        write_intent(agent_dir(state_dir, node), intent)

    def registry_file(self) -> Path:
        """The lab's registry: `lab up` and `lab down` rewrite it (incremental plans stamp it)."""
        from meshctl.lab.registry import registry_path

        return registry_path(self.cluster)


def lab_runtime(desired: DesiredState) -> RuntimeInventory | None:
    """The lab's inventory store with `[inventory] source = "lab"`. None otherwise, and for a
    lab built without one (by the library rather than `meshctl lab up`): its pods are then the
    repo's, with the lab's addresses."""
    if desired.config.inventory.source != "lab":
        return None
    from meshctl.lab import inventory, registry

    cluster = desired.config.cluster
    if registry.load(cluster) is None:
        raise LabError(f"[inventory] source = \"lab\" but no lab named {cluster!r} is up: "
                       f"run `meshctl lab up -C {desired.root}`")
    return inventory.load(cluster)


def open_lab(desired: DesiredState) -> tuple[DesiredState, LabBackend]:
    """The lab of the config's cluster, which must be up with every node of the config; the
    desired state gets the lab's pod IPs and node underlay addresses (and with `[inventory]
    source = "lab"` the lab's pods and namespaces)."""
    from meshctl.lab import registry

    cluster, root = desired.config.cluster, desired.root
    reg = registry.load(cluster)
    if reg is None:
        raise LabError(f"no lab named {cluster!r} is up: run `meshctl lab up -C {root}`")
    missing = [n.name for n in desired.config.nodes if n.name not in reg.nodes]
    if missing:
        raise LabError(
            f"lab {cluster!r} has no node(s) {', '.join(missing)}: run `meshctl lab up -C {root}` again"
        )
    runtime = lab_runtime(desired)
    if runtime is not None:
        desired = runtime.apply_to(desired)
    desired = desired.with_pod_ips({k: p.address for k, p in reg.pods.items()})
    desired = desired.with_node_addresses({n: IPv4Address(r.underlay_ip) for n, r in reg.nodes.items()})
    backend = _backend(reg)
    backend.runtime = runtime
    return desired, backend


def find_lab(cluster: str) -> LabBackend | None:
    """The lab of `cluster` when one is up on this host, else None."""
    from meshctl.lab import registry

    reg = registry.load(cluster)
    return _backend(reg) if reg is not None else None


def _backend(reg: Registry) -> LabBackend:
    return LabBackend(reg.cluster, {name: rec.netns for name, rec in reg.nodes.items()},
                      {rec.underlay_ip: name for name, rec in reg.nodes.items()})


def lab_agent_pids(cluster: str) -> dict[str, int]:
    """node -> pid of the flow agents `meshctl lab up` started that still run."""
    from meshctl.lab import agents

    return agents.running(cluster)


def lab_pod_ips(cluster: str) -> dict[str, IPv4Address]:
    """"ns/pod" -> address of the lab's pods; empty when no lab of `cluster` is up."""
    from meshctl.lab.registry import pod_ips

    return pod_ips(cluster)
