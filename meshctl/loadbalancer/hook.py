"""Glue between the workflow and the load balancer (one line in make_plan, like encryption).

Compile is pure and knows no node addresses; the lab's registry does (each node's underlay
address and device). NodePort frontends and the SNAT source are the node's underlay address.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import replace
from ipaddress import IPv4Address
from typing import Any

from meshctl.compile.services import LbNode, compile_load_balancer
from meshctl.nodestate import NodeState

UNDERLAY_DEVICE = "eth0"  # the node's underlay device in the lab


def lab_nodes(config: Any) -> list[LbNode]:
    from meshctl.lab import registry

    reg = registry.load(config.cluster)
    records = reg.nodes if reg is not None else {}
    return [LbNode(n.name, IPv4Address(records[n.name].underlay_ip), UNDERLAY_DEVICE)
            for n in config.nodes if n.name in records]


def with_load_balancer(desired: Any, intended: Mapping[str, NodeState],
                       observed: Mapping[str, NodeState]) -> dict[str, NodeState]:
    """`intended` with each node's LoadBalancerState (unchanged when the LB never ran)."""
    settings = desired.config.load_balancer
    if not settings.kube_proxy_replacement and not any(s.load_balancer.enabled for s in observed.values()):
        return dict(intended)
    targets = compile_load_balancer(desired.services, desired.pods, lab_nodes(desired.config), settings)
    return {n: replace(s, load_balancer=targets[n]) if n in targets else s for n, s in intended.items()}
