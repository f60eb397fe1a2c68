"""meshctl.observe: a live node -> the same NodeState type compile produces.

pyinfra-style: `read` touches the kernel and returns raw facts, `parse` turns them into a
NodeState without the kernel (unit-testable).
"""

from __future__ import annotations

from dataclasses import replace

from meshctl.dataplane.node import NodeDatapath
from meshctl.errors import DataplaneError, ObserveError
from meshctl.nodestate import NodeState
from meshctl.observe import mapcache
from meshctl.observe.parse import parse_node
from meshctl.observe.read import read_node
from meshctl.observe.wireguard import observe_wireguard


def observe_node(cluster: str, node: str, netns: str | None) -> NodeState:
    """The node's live datapath state; a node never loaded observes as NodeState(node)."""
    try:
        cache = mapcache.load()
        state = parse_node(read_node(NodeDatapath(cluster, node, netns)), cache)
        cache.save()
        return replace(state, encryption=observe_wireguard(cluster, node, netns))
    except DataplaneError as err:
        raise ObserveError(node, str(err)) from err


def fingerprint(cluster: str, node: str, netns: str | None) -> str:
    return observe_node(cluster, node, netns).fingerprint()


__all__ = ["fingerprint", "observe_node"]
