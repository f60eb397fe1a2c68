"""NodeDriver over the lab: observe, reconcile and drop counters of nodes that are netns here.

The only module of meshctl.apply that touches the binding (meshctl.dataplane, meshctl.observe);
imported lazily by the backend so unit tests and `--help` never load libbpf or pyroute2.
"""

from __future__ import annotations

from collections.abc import Mapping
from contextlib import AbstractContextManager

from meshctl.apply.gates import MetricCounts
from meshctl.dataplane.maps import MetricsMap
from meshctl.dataplane.node import NodeDatapath
from meshctl.dataplane.reconcile import reconcile
from meshctl.dataplane.writer import datapath_writer
from meshctl.nodestate import NodeState
from meshctl.observe import observe_node


class LabDriver:
    """Every node of one cluster, by name -> netns."""

    def __init__(self, cluster: str, netns: Mapping[str, str]) -> None:
        self.cluster, self.netns = cluster, dict(netns)
        self._datapaths: dict[str, NodeDatapath] = {}

    def datapath(self, node: str) -> NodeDatapath:
        if node not in self._datapaths:
            self._datapaths[node] = NodeDatapath(self.cluster, node, self.netns[node])
        return self._datapaths[node]

    def observe(self, node: str) -> NodeState:
        return observe_node(self.cluster, node, self.netns[node])

    def reconcile(self, node: str, current: NodeState, target: NodeState) -> None:
        with self.writer(node):
            reconcile(self.datapath(node), current, target)

    def writer(self, node: str) -> AbstractContextManager[None]:
        """The node's writer lock (meshctl.dataplane.writer): the node's agent writes it too."""
        return datapath_writer(self.cluster, node)

    def drop_counts(self, node: str) -> MetricCounts:
        return read_drop_counts(self.cluster, node)

    def uninstall(self, node: str) -> NodeState:
        """Remove everything meshctl made on `node`: reconcile it to the empty state (programs off
        the pods, endpoints, policies, services, WireGuard peers, routes, strict chain and device),
        unpin every map and program, stop wireguard-go and drop its keys. Returns what was there."""
        from meshctl.dataplane.wireguard import teardown

        before = self.observe(node)
        self.reconcile(node, before, NodeState(node))
        self.datapath(node).remove()
        teardown.remove_node(self.cluster, node)
        self._datapaths.pop(node, None)
        return before


def read_drop_counts(cluster: str, node: str) -> MetricCounts:
    """(verdict, reason, direction) -> packets summed over CPUs; empty when nothing is loaded."""
    metrics = MetricsMap.open(cluster, node)
    if metrics is None:
        return {}
    with metrics:
        return {(k.verdict, k.reason, k.direction): v.packets for k, v in metrics.items()}
