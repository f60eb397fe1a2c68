"""Shared helpers of the lab tests: tiny topologies and a lab that always comes down."""

from __future__ import annotations

import os
from collections.abc import Iterator
from contextlib import contextmanager
from ipaddress import IPv4Network

from meshctl.lab import cluster
from meshctl.lab.topology import LabNode, LabPod, Topology, validate


def unique(name: str) -> str:
    """A cluster name private to this test process: several engineers run the suite at once."""
    return f"{name}-{os.getpid() % 100000}"


def two_node_topology(name: str, pods: tuple[LabPod, ...] | None = None) -> Topology:
    """n1 (10.210.1.0/24): demo/frontend, demo/api; n2 (10.210.2.0/24): demo/database."""
    topo = Topology(
        cluster=name, underlay_cidr=IPv4Network("172.31.251.0/24"),
        nodes=(LabNode("n1", IPv4Network("10.210.1.0/24")), LabNode("n2", IPv4Network("10.210.2.0/24"))),
        pods=pods if pods is not None else (
            LabPod("demo/frontend", "n1", (80,), (53,)),
            LabPod("demo/api", "n1", (3000,), (53,)),
            LabPod("demo/database", "n2", (5432,), (53,)),
        ),
    )
    validate(topo)
    return topo


@contextmanager
def lab(topo: Topology, with_datapath: bool = False) -> Iterator[cluster.UpResult]:
    try:
        yield cluster.up(topo, with_datapath=with_datapath)
    finally:
        cluster.down(topo.cluster, tuple(n.name for n in topo.nodes))
