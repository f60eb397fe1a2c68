"""Lab topology validation and address allocation (pure, no kernel)."""

from __future__ import annotations

from ipaddress import IPv4Address, IPv4Network

import pytest

from meshctl.errors import ConfigError, LabError, SourceError
from meshctl.lab import names
from meshctl.lab.topology import Addresses, LabNode, LabPod, Topology, allocate, validate

N1 = LabNode("n1", IPv4Network("10.1.0.0/24"))
N2 = LabNode("n2", IPv4Network("10.2.0.0/24"))
UL = IPv4Network("172.31.250.0/24")


def topo(*pods: LabPod, nodes: tuple[LabNode, ...] = (N1, N2), underlay: IPv4Network = UL) -> Topology:
    return Topology("t", underlay, nodes, pods)


def test_pod_on_unknown_node_names_file_line_and_field() -> None:
    with pytest.raises(SourceError) as exc:
        validate(topo(LabPod("demo/a", "n9", file="pods.yaml", line=7)))
    assert str(exc.value).startswith("pods.yaml:7: spec.nodeName:")
    assert "unknown node 'n9'" in str(exc.value) and "n1, n2" in str(exc.value)


def test_duplicate_pod() -> None:
    with pytest.raises(SourceError, match=r"duplicate pod demo/a \(first defined at a.yaml:1"):
        validate(topo(LabPod("demo/a", "n1", file="a.yaml", line=1),
                      LabPod("demo/a", "n2", file="b.yaml", line=3)))


def test_overlapping_pod_cidrs() -> None:
    with pytest.raises(ConfigError, match=r"nodes\[1\]\.podCIDR: pod CIDR 10\.1\.0\.128/25 .* overlaps"):
        validate(topo(nodes=(N1, LabNode("n2", IPv4Network("10.1.0.128/25")))))


def test_pod_cidr_overlapping_underlay() -> None:
    with pytest.raises(ConfigError, match="overlaps the lab underlay"):
        validate(topo(underlay=IPv4Network("10.0.0.0/8")))


def test_pod_ip_outside_cidr_or_gateway_or_taken() -> None:
    with pytest.raises(SourceError, match=r"status.podIP: pod IP 10.2.0.5 .*10.1.0.0/24"):
        validate(topo(LabPod("demo/a", "n1", pod_ip=IPv4Address("10.2.0.5"))))
    with pytest.raises(SourceError, match="first is the gateway"):
        validate(topo(LabPod("demo/a", "n1", pod_ip=IPv4Address("10.1.0.1"))))
    with pytest.raises(SourceError, match="already used by demo/a"):
        validate(topo(LabPod("demo/a", "n1", pod_ip=IPv4Address("10.1.0.9")),
                      LabPod("demo/b", "n1", pod_ip=IPv4Address("10.1.0.9"))))


def test_missing_node_name_and_bad_names() -> None:
    with pytest.raises(SourceError, match=r"no spec\.nodeName"):
        validate(topo(LabPod("demo/a", "")))
    with pytest.raises(ConfigError, match="cluster name"):
        validate(Topology("Bad_Name", UL, (N1,)))
    with pytest.raises(ConfigError, match="not 'u'"):
        validate(topo(nodes=(LabNode("u", IPv4Network("10.1.0.0/24")),)))


def test_allocation_skips_gateway_and_respects_given_ips() -> None:
    t = topo(LabPod("demo/a", "n1"), LabPod("demo/b", "n1", pod_ip=IPv4Address("10.1.0.2")),
             LabPod("demo/c", "n2"))
    validate(t)
    a = allocate(t)
    assert a.pods == {"demo/a": IPv4Address("10.1.0.3"), "demo/b": IPv4Address("10.1.0.2"),
                      "demo/c": IPv4Address("10.2.0.2")}
    assert a.underlay == {"n1": IPv4Address("172.31.250.1"), "n2": IPv4Address("172.31.250.2")}


def test_allocation_is_stable_across_runs() -> None:
    prev = Addresses(pods={"demo/b": IPv4Address("10.1.0.7"), "demo/gone": IPv4Address("10.1.0.2")},
                     underlay={"n2": IPv4Address("172.31.250.1")})
    t = topo(LabPod("demo/a", "n1"), LabPod("demo/b", "n1"))
    a = allocate(t, prev)
    assert a.pods["demo/b"] == IPv4Address("10.1.0.7")  # kept
    assert a.pods["demo/a"] == IPv4Address("10.1.0.2")  # freed address reused
    assert a.underlay == {"n1": IPv4Address("172.31.250.2"), "n2": IPv4Address("172.31.250.1")}
    # a previous address outside the node's CIDR (pod moved node) is not kept
    moved = allocate(topo(LabPod("demo/b", "n2")), prev)
    assert moved.pods["demo/b"] == IPv4Address("10.2.0.2")


def test_full_pod_cidr() -> None:
    small = LabNode("n1", IPv4Network("10.1.0.0/30"))  # .1 gateway, .2 the only pod address
    t = topo(LabPod("demo/a", "n1"), LabPod("demo/b", "n1"), nodes=(small,))
    with pytest.raises(LabError, match="is full"):
        allocate(t)


def test_names_fit_and_do_not_match_other_clusters() -> None:
    assert len(names.pod_veth("some-long-namespace/some-very-long-pod-name")) <= 15
    assert names.is_lab_netns("a", "mc-a-u", set())
    assert names.is_lab_netns("a", "mc-a-n1", {"n1"})
    assert names.is_lab_netns("a", names.pod_netns("a", "x/y"), set())
    assert not names.is_lab_netns("a", "mc-a-b-u", {"n1"})  # lab "a-b"
    assert not names.is_lab_netns("a", "mc-a-n2", {"n1"})


def test_node_addresses_of_the_config_are_kept_and_checked() -> None:
    """A cluster's meshctl.toml names its nodes' addresses (the CLI reaches the agents there):
    the lab builds the nodes on them, and refuses one outside the underlay or given twice."""
    from meshctl.lab.topology import host_address

    given = LabNode("n2", IPv4Network("10.2.0.0/24"), IPv4Address("172.31.250.7"))
    got = allocate(topo(nodes=(N1, given)), Addresses(underlay={"n2": IPv4Address("172.31.250.1")}))
    assert got.underlay == {"n1": IPv4Address("172.31.250.1"), "n2": IPv4Address("172.31.250.7")}
    for bad in (IPv4Address("10.9.9.9"), host_address(UL)):
        node = LabNode("n2", IPv4Network("10.2.0.0/24"), bad)
        with pytest.raises(ConfigError, match=rf"nodes\[1\]\.address: address {bad} of node 'n2' is not"):
            validate(topo(nodes=(N1, node)))
    twice = (LabNode("n1", N1.pod_cidr, given.address), given)
    with pytest.raises(ConfigError, match="of node 'n2' is also the address of node 'n1'"):
        validate(topo(nodes=twice))
