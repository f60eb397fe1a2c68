"""The load balancer in the plan (one line in make_plan, like encryption).

Compile is pure and knows no node addresses: meshctl.toml (`address` under [[nodes]]) does, or
the lab's backend fills them in (meshctl.underlay). NodePort frontends and the SNAT source are the node's
underlay address; a node with none is an error once kubeProxyReplacement is on. The underlay
device is "eth0" (the lab's; a real node's underlay device is assumed to be eth0 as well).
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import replace
from typing import Any

from meshctl.compile.services import LbNode, compile_load_balancer
from meshctl.nodestate import NodeState

UNDERLAY_DEVICE = "eth0"  # the node's underlay device in the lab


def lab_nodes(config: Any) -> list[LbNode]:
    """Every node with its underlay address (config, else lab); raises for a node without one."""
    from meshctl.underlay import require_addresses

    addresses = require_addresses(config, "kubeProxyReplacement (NodePort frontends and SNAT)")
    return [LbNode(n.name, addresses[n.name], UNDERLAY_DEVICE) for n in config.nodes]


def with_load_balancer(desired: Any, intended: Mapping[str, NodeState],
                       observed: Mapping[str, NodeState]) -> dict[str, NodeState]:
    """`intended` with each node's LoadBalancerState (unchanged when the LB never ran)."""
    settings = desired.config.load_balancer
    if not settings.kube_proxy_replacement and not any(s.load_balancer.enabled for s in observed.values()):
        return _netdev_for_l7(intended)
    nodes = lab_nodes(desired.config) if settings.kube_proxy_replacement else []  # off: nothing to place
    targets = compile_load_balancer(desired.services, desired.pods, nodes, settings)
    return _netdev_for_l7({n: replace(s, load_balancer=targets[n]) if n in targets else s
                           for n, s in intended.items()})


def _netdev_for_l7(nodes: Mapping[str, NodeState]) -> dict[str, NodeState]:
    """A node whose pods have L7 ports needs from_netdev on its underlay device even without the
    load balancer: connections from other nodes are handed to its proxy there (bpf/lib/proxy.h)."""
    return {n: replace(s, load_balancer=replace(s.load_balancer, interface=UNDERLAY_DEVICE))
            if s.http and not s.load_balancer.interface else s for n, s in nodes.items()}
