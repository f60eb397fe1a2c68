"""The agent backend: a real cluster, one `meshctl agent` per node (the DaemonSet).

Nodes come from meshctl.toml, pod IPs from the inventory (status.podIP of the repo's Pods, the
Kubernetes API with `[inventory] source = "kubernetes"`, or a lab of the cluster on this host
with `source = "lab"`), node states, checks and drops from each node's agent: over TCP with
mutual TLS at the node's address (`[agents] port`), else on its unix socket. Node underlay
addresses (WireGuard endpoints, NodePort, SNAT) come from `address` under [[nodes]] or the Nodes'
InternalIP (meshctl.underlay); the WireGuard reconcile runs in each node's agent.
"""

from __future__ import annotations

import logging
from collections.abc import Callable, Iterable, Mapping, Sequence
from concurrent.futures import ThreadPoolExecutor
from contextlib import AbstractContextManager
from ipaddress import IPv4Address
from pathlib import Path
from typing import TYPE_CHECKING, Any, TypeVar

from meshctl.errors import LabError

if TYPE_CHECKING:
    from meshctl.agentapi.tls import TcpEndpoint
    from meshctl.apply.engine import CheckRunner, FlowDropSource, Journal, NodeDriver
    from meshctl.compile.intent import NodeIntent
    from meshctl.connections import TrackedConnection
    from meshctl.dataplane.dnsproxy import CachedIp
    from meshctl.model.config import MeshConfig
    from meshctl.nodestate import NodeState, WireguardState
    from meshctl.source import DesiredState
    from meshctl.source.runtime import RuntimeInventory
    from meshctl.state import State

log = logging.getLogger(__name__)

T = TypeVar("T")
MAX_PARALLEL_AGENTS = 16  # agents are separate processes: observing them in parallel is real work


class AgentBackend:
    """Every node of the config through its agent: over TCP with mutual TLS at the node's address
    (`[agents] port`), else on its unix socket (`[apply] socketDir`)."""

    kind = "agent"

    def __init__(self, cluster: str, nodes: Iterable[str], socket_dir: str | Path | None = None,
                 endpoints: Mapping[str, TcpEndpoint] | None = None, lease_s: float = 30.0) -> None:
        from meshctl.agentapi.protocol import socket_dir as resolve_dir

        self.cluster, self.node_order = cluster, list(nodes)
        self.socket_dir = resolve_dir(socket_dir)
        self.endpoints = dict(endpoints or {})
        self.lease_s = lease_s  # how long an apply holds a node without renewing ([apply] lease)
        self.runtime: RuntimeInventory | None = None

    @property
    def nodes(self) -> frozenset[str]:
        return frozenset(self.node_order)

    def describe(self) -> str:
        tls = all(e.tls is not None for e in self.endpoints.values())
        where = f"sockets in {self.socket_dir}" if not self.endpoints else (
            "over mutual TLS" if tls else "over plain TCP")
        return f"the agents of {self.cluster} ({where})"

    def endpoint(self, node: str) -> Path | TcpEndpoint:
        """Where `node`'s agent listens: its TCP endpoint, else its unix socket."""
        from meshctl.agentapi.protocol import socket_path

        return self.endpoints.get(node) or socket_path(self.cluster, node, self.socket_dir)

    def state_lock(self, state_dir: Path, operation: str) -> AbstractContextManager[Any]:
        from meshctl.state.lock import cache_lock

        return cache_lock(state_dir, operation)  # the nodes' apply sessions are the cluster's locks

    def driver(self, plan_id: str = "", hold: Sequence[str] = ()) -> NodeDriver:
        from meshctl.agentapi.driver import AgentDriver
        from meshctl.state.lock import wait_s

        driver = AgentDriver(self.cluster, {n: self.endpoint(n) for n in self.node_order}, plan_id=plan_id,
                             lease_s=self.lease_s if plan_id else None)
        if plan_id:
            driver.hold(hold, wait_s())
        return driver

    def journal(self, state_dir: Path, plan_id: str) -> Journal:
        from meshctl.state.journal import MemoryJournal

        return MemoryJournal(plan_id)  # each node journals itself, and reverts itself if we die

    def end_apply(self, driver: NodeDriver, applied: Iterable[str]) -> list[str]:
        from meshctl.agentapi.driver import AgentDriver

        return driver.end_session(applied) if isinstance(driver, AgentDriver) else []

    def observe(self, node: str) -> NodeState:
        return self.driver().observe(node)

    def observe_many(self, nodes: Iterable[str]) -> dict[str, NodeState]:
        """Each node's state from its agent, in parallel; the first unreachable agent raises."""
        order = list(nodes)
        if len(order) <= 1:
            return {n: self.observe(n) for n in order}
        return self._each(order, self.driver().observe)

    def connections(self, nodes: Iterable[str]) -> dict[str, tuple[TrackedConnection, ...]]:
        """Each node's connections from its agent (GET /v1/conntrack), in parallel."""
        from meshctl.agentapi.client import AgentClient

        return self._each(nodes, lambda node: AgentClient(node, self.endpoint(node)).connections())

    def fqdn_cache(self, nodes: Iterable[str]) -> dict[str, list[CachedIp]]:
        """Each node's learned IPs from its agent (GET /v1/fqdn/cache), in parallel."""
        from meshctl.agentapi.client import AgentClient

        return self._each(nodes, lambda node: AgentClient(node, self.endpoint(node)).fqdn_cache())

    def fqdn_clean(self, nodes: Iterable[str], pattern: str) -> dict[str, list[str]]:
        from meshctl.agentapi.client import AgentClient

        return self._each(nodes, lambda node: AgentClient(node, self.endpoint(node)).fqdn_clean(pattern))

    @staticmethod
    def _each(nodes: Iterable[str], ask: Callable[[str], T]) -> dict[str, T]:
        """node -> ask(node), the agents asked in parallel; the first error raises."""
        order = list(nodes)
        workers = max(1, min(MAX_PARALLEL_AGENTS, len(order)))
        with ThreadPoolExecutor(workers, thread_name_prefix="agents") as pool:
            return dict(zip(order, pool.map(ask, order), strict=True))

    def wireguard(self, nodes: Iterable[str]) -> dict[str, WireguardState]:
        return {n: s.encryption for n, s in self.observe_many(nodes).items()}

    def check_runner(self, driver: NodeDriver, pod_nodes: Mapping[str, str],
                     pod_ips: Mapping[str, IPv4Address], state_dir: Path) -> CheckRunner:
        from meshctl.agentapi.driver import AgentCheckRunner, AgentDriver

        assert isinstance(driver, AgentDriver)
        return AgentCheckRunner(driver, pod_nodes, pod_ips)

    def drop_source(self, driver: NodeDriver, pod_ips: Mapping[str, IPv4Address],
                    state_dir: Path) -> FlowDropSource:
        from meshctl.agentapi.driver import AgentDriver
        from meshctl.apply.flowdrops import AgentDropSource

        assert isinstance(driver, AgentDriver)
        return AgentDropSource(driver.client, {str(ip): pod for pod, ip in pod_ips.items()})

    def restore(self, node: str, before: NodeState) -> None:
        from meshctl.agentapi.client import AgentClient

        AgentClient(node, self.endpoint(node)).revert(before)  # the agent proves the live state is `before`

    def uninstall(self, node: str, state_dir: Path) -> NodeState:
        from meshctl.agentapi.client import AgentClient

        return AgentClient(node, self.endpoint(node)).uninstall()  # the agent drops its share too

    def shares(self, nodes: Iterable[str], state_dir: Path) -> dict[str, State | None]:
        """Each node's share from its agent (GET /v1/share), in parallel; an unreachable agent raises."""
        from meshctl.agentapi.client import AgentClient

        return self._each(nodes, lambda node: AgentClient(node, self.endpoint(node)).held_share())

    def endpoint_tables(self, nodes: Iterable[str]) -> dict[str, dict[str, Any] | None]:
        """Each node's endpoint ids as its agent allocated them (GET /v1/endpoints), in parallel."""
        from meshctl.agentapi.client import AgentClient

        return self._each(nodes, lambda node: AgentClient(node, self.endpoint(node)).endpoint_table())

    def record_share(self, node: str, share: dict[str, Any], state_dir: Path) -> None:
        from meshctl.agentapi.client import AgentClient

        AgentClient(node, self.endpoint(node)).record_share(share)

    def intent(self, node: str, state_dir: Path) -> NodeIntent | None:
        from meshctl.agentapi.client import AgentClient

        return AgentClient(node, self.endpoint(node)).held_intent()

    def record_intent(self, node: str, intent: NodeIntent, state_dir: Path) -> None:
        from meshctl.agentapi.client import AgentClient

        AgentClient(node, self.endpoint(node)).record_intent(intent, self.observe(node).fingerprint())



def agent_inventory(desired: DesiredState) -> DesiredState:
    """Pod IPs for the agent driver, from the inventory `[inventory] source` names.

    "repo" (the default) keeps the repo's Pods with their status.podIP; "lab" fills the IPs the
    repo lacks from a lab of the cluster on this host (the only case that reads the lab);
    "kubernetes" has the API server's pods already (open_agents). Pods left without an address
    get no endpoint (as in Cilium before the CNI assigned one): say so.
    """
    config = desired.config
    if config.inventory.source == "lab":
        from meshctl.backend.lab import lab_pod_ips

        lab = lab_pod_ips(config.cluster)
        if not lab:
            raise LabError(f"[inventory] source = \"lab\" but no lab named {config.cluster!r} is up")
        desired = desired.with_pod_ips(lab)
    missing = sorted(p.key for p in desired.pods if p.pod_ip is None)
    if missing:
        shown = ", ".join(missing[:5]) + (f" and {len(missing) - 5} more" if len(missing) > 5 else "")
        log.warning("%d pod(s) without an IP get no endpoint: %s (set status.podIP in the inventory, "
                    "or use [inventory] source = \"kubernetes\")", len(missing), shown)
    return desired


def open_agents(desired: DesiredState) -> tuple[DesiredState, AgentBackend]:
    """The desired state with pods from the inventory, and the nodes' agents. With the
    Kubernetes inventory the pods come with the numbers the agents gave them
    (meshctl.backend.kuberuntime), so the nodes follow pods under the intent an apply hands them."""
    from meshctl.backend.lab import lab_runtime

    runtime = lab_runtime(desired)  # the lab's inventory store with [inventory] source = "lab"
    listed = None
    if desired.config.inventory.source == "kubernetes":
        from meshctl.source.kubernetes import inventory_from_config

        listed = inventory_from_config(desired.config.inventory, desired.root, desired.config.cluster)
        for why in listed.skipped:
            log.info("kubernetes inventory: skipped %s", why)
        desired = listed.apply_to(desired)  # the Nodes' InternalIP for nodes without an address
    backend = agents_of(desired.config)
    if listed is not None:
        from meshctl.backend.kuberuntime import kube_runtime

        runtime = kube_runtime(desired, listed, backend)
    backend.runtime = runtime
    return agent_inventory(runtime.apply_to(desired) if runtime is not None else desired), backend


def agents_of(config: MeshConfig) -> AgentBackend:
    """The agents of the config's nodes: over TCP (mutual TLS unless `insecure`) with `[agents]
    port`, else on unix sockets. Raises ConfigError for a node without an address."""
    nodes = [n.name for n in config.nodes]
    a = config.agents
    if a.port is None:
        return AgentBackend(config.cluster, nodes, config.apply.socket_dir, lease_s=config.apply.lease)
    from meshctl.agentapi.tls import TcpEndpoint, TlsFiles
    from meshctl.underlay import require_addresses

    addresses = require_addresses(config, "agents over TCP ([agents] port)")
    files = None if a.insecure else TlsFiles.from_env(a.ca, a.cert, a.key)
    tls = files.client_context() if files is not None else None
    endpoints = {n: TcpEndpoint(str(addresses[n]), a.port, tls, files.ca if files else None) for n in nodes}
    return AgentBackend(config.cluster, nodes, config.apply.socket_dir, endpoints, config.apply.lease)
