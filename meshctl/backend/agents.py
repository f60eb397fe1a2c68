"""The agent backend: a real cluster, one `meshctl agent` per node (the DaemonSet).

Nodes come from meshctl.toml, pod IPs from the inventory (status.podIP of the repo's Pods, or the
Kubernetes API with `[inventory] source = "kubernetes"`), node states, checks and drops from each
node's agent. No lab is needed; when a lab of the cluster happens to be up, it only fills pod IPs
the inventory lacks (so a lab repo without status.podIP keeps working with the agent driver).
Node underlay addresses (WireGuard endpoints, NodePort, SNAT) come from `address` under [[nodes]]
or the Nodes' InternalIP (meshctl.underlay); the WireGuard reconcile runs in each node's agent.
"""

from __future__ import annotations

import logging
from collections.abc import Iterable, Mapping
from concurrent.futures import ThreadPoolExecutor
from ipaddress import IPv4Address
from pathlib import Path
from typing import TYPE_CHECKING

from meshctl.errors import LabError

if TYPE_CHECKING:
    from meshctl.apply.engine import CheckRunner, FlowDropSource, NodeDriver
    from meshctl.connections import TrackedConnection
    from meshctl.nodestate import NodeState, WireguardState
    from meshctl.source import DesiredState

log = logging.getLogger(__name__)

MAX_PARALLEL_AGENTS = 16  # agents are separate processes: observing them in parallel is real work


class AgentBackend:
    """Every node of the config through its agent's unix socket (`[apply] socketDir`)."""

    kind = "agent"

    def __init__(self, cluster: str, nodes: Iterable[str], socket_dir: str | Path | None = None) -> None:
        from meshctl.agentapi.protocol import socket_dir as resolve_dir

        self.cluster, self.node_order = cluster, list(nodes)
        self.socket_dir = resolve_dir(socket_dir)

    @property
    def nodes(self) -> frozenset[str]:
        return frozenset(self.node_order)

    def describe(self) -> str:
        return f"the agents of {self.cluster} (sockets in {self.socket_dir})"

    def socket(self, node: str) -> Path:
        from meshctl.agentapi.protocol import socket_path

        return socket_path(self.cluster, node, self.socket_dir)

    def driver(self, plan_id: str = "") -> NodeDriver:
        from meshctl.agentapi.driver import AgentDriver

        return AgentDriver(self.cluster, self.node_order, self.socket_dir, plan_id)

    def observe(self, node: str) -> NodeState:
        return self.driver().observe(node)

    def observe_many(self, nodes: Iterable[str]) -> dict[str, NodeState]:
        """Each node's state from its agent, in parallel; the first unreachable agent raises."""
        order = list(nodes)
        if len(order) <= 1:
            return {n: self.observe(n) for n in order}
        driver = self.driver()
        with ThreadPoolExecutor(min(MAX_PARALLEL_AGENTS, len(order)), thread_name_prefix="observe") as pool:
            states = list(pool.map(driver.observe, order))
        return dict(zip(order, states, strict=True))

    def connections(self, nodes: Iterable[str]) -> dict[str, tuple[TrackedConnection, ...]]:
        """Each node's connections from its agent (GET /v1/conntrack), in parallel."""
        from meshctl.agentapi.client import AgentClient

        order = list(nodes)
        clients = [AgentClient(n, self.socket(n)) for n in order]
        with ThreadPoolExecutor(max(1, min(MAX_PARALLEL_AGENTS, len(order))),
                                thread_name_prefix="conntrack") as pool:
            tables = list(pool.map(lambda c: c.connections(), clients))
        return dict(zip(order, tables, strict=True))

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
        from meshctl.agentapi.driver import AgentDriver

        driver = AgentDriver(self.cluster, self.node_order, self.socket_dir)
        driver.client(node).revert(before)  # the agent proves the live state equals `before`

    def inventory_token(self) -> tuple[int, int] | None:
        return None  # incremental plans are the lab's (meshctl.app.increment)


def agent_inventory(desired: DesiredState) -> DesiredState:
    """Pods and their IPs for the agent driver: the inventory first, a visible lab second.

    `[inventory] source = "kubernetes"` replaces the repo's namespaces and pods with the
    cluster's (podIP from the API); otherwise the repo's Pods keep their status.podIP. A lab of
    the cluster that is up on this host fills only the IPs still missing. Pods left without an
    address get no endpoint (as in Cilium before the CNI assigned one): say so on stderr.
    """
    from meshctl.backend.lab import lab_pod_ips

    config = desired.config
    if config.inventory.source == "kubernetes":
        from meshctl.source.kubernetes import inventory_from_config

        inventory = inventory_from_config(config.inventory, desired.root, config.cluster)
        desired = inventory.apply_to(desired)
        for why in inventory.skipped:
            log.info("kubernetes inventory: skipped %s", why)
    lab = lab_pod_ips(config.cluster)
    if config.inventory.source == "lab" and not lab:
        raise LabError(f"[inventory] source = \"lab\" but no lab named {config.cluster!r} is up")
    if lab:
        desired = desired.with_pod_ips(lab)
    missing = sorted(p.key for p in desired.pods if p.pod_ip is None)
    if missing:
        shown = ", ".join(missing[:5]) + (f" and {len(missing) - 5} more" if len(missing) > 5 else "")
        log.warning("%d pod(s) without an IP get no endpoint: %s (set status.podIP in the inventory, "
                    "or use [inventory] source = \"kubernetes\")", len(missing), shown)
    return desired


def open_agents(desired: DesiredState) -> tuple[DesiredState, AgentBackend]:
    """The desired state with pod IPs from the inventory, and the nodes' agents."""
    config = desired.config
    backend = AgentBackend(config.cluster, [n.name for n in config.nodes], config.apply.socket_dir)
    return agent_inventory(desired), backend
