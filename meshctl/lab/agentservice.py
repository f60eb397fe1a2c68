"""The node service an agent serves on this host: the lab's kernel, pods and checks.

`meshctl agent` (the CLI) builds it and hands it to the API server (meshctl.agentapi): the agent
package itself knows no lab. A node of a lab runs in its netns; any other node is the host.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

from meshctl.agentapi.endpoints import EndpointSync
from meshctl.agentapi.service import NodeService


def node_netns(cluster: str, node: str) -> str | None:
    """The lab netns of `node` when this host runs that cluster's lab, else None (the host's own)."""
    from meshctl.errors import LabError
    from meshctl.lab import registry

    try:
        reg = registry.load(cluster)
    except LabError:  # an unreadable registry means "not a lab node"
        return None
    rec = reg.nodes.get(node) if reg else None
    return rec.netns if rec else None


def lab_service(cluster: str, node: str, netns: str | None, journal_dir: Path,
                store: Path | None = None) -> NodeService:
    """The service over this host: the lab driver (kernel), pods and checks from the lab registry.

    The node sees only itself: its checks' drops come from its own flow `store` (else its
    counters), and the drops of connections other agents made are looked up in that store.
    """
    from meshctl.apply.driver import LabDriver
    from meshctl.apply.gates import ProbeAttempt, WitnessedDrop
    from meshctl.lab import registry
    from meshctl.lab.verify import LabCheckRunner, lab_witness

    witness = lab_witness(cluster, None, visible={node}, own_store=store)

    def pods() -> dict[str, Any]:
        reg = registry.load(cluster)
        return {k: p for k, p in reg.pods.items() if p.node == node} if reg else {}

    def runner() -> Any:
        reg = registry.load(cluster)
        ips = {k: p.address for k, p in reg.pods.items()} if reg else {}
        nodes = {k: p.node for k, p in reg.pods.items()} if reg else {}
        return LabCheckRunner(cluster, ips, pod_nodes=nodes, witness=witness)

    def drops(attempt: ProbeAttempt) -> list[WitnessedDrop]:
        return witness.drops([node], attempt, {})

    def window(since_ns: int, until_ns: int, counted: int) -> list[list[Any]]:
        from meshctl.apply.flowdrops import window_drops, wire_rows

        assert store is not None
        return wire_rows(window_drops(store, node, since_ns, until_ns, counted))

    def conntrack() -> tuple[Any, ...]:
        from meshctl.observe.conntrack import observe_connections

        return observe_connections(cluster, node, netns)

    from meshctl.dataplane.dnsproxy import DnsFiles

    driver = LabDriver(cluster, {node: netns})  # type: ignore[dict-item]  # None = the host netns
    return NodeService(node, driver, journal_dir, pods, runner, flow_drops=drops if store else None,
                       conntrack=conntrack, window_drops=window if store else None,
                       dns_files=DnsFiles.of(cluster, node))


def lab_endpoint_sync(service: NodeService, cluster: str, state_dir: Path) -> EndpointSync:
    """The node's endpoint lifecycle over the lab's inventory store (`[inventory] source = "lab"`).
    It also waits while a CLI apply of the repo holds its state lock: the lab driver writes the
    nodes' maps from the CLI."""
    from meshctl.lab import inventory
    from meshctl.state.lock import read_lock

    return service.endpoint_sync(lambda: inventory.load(cluster), lambda: read_lock(state_dir) is not None)
