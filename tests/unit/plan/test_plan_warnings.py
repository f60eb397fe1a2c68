"""Plan warnings: DNS when egress default deny arrives, map fill, compiler warnings kept."""

from __future__ import annotations

from ipaddress import IPv4Address

from meshctl.catalog import Catalog
from meshctl.dataplane.structs import POLICY_MAP_SIZE
from meshctl.nodestate import (
    PROTO_TCP,
    PROTO_UDP,
    Direction,
    EndpointEntry,
    FrozenMap,
    NodeState,
    PolicyEntry,
    PolicyKey,
)
from meshctl.plan.capacity import capacity_warnings
from meshctl.plan.warnings import dns_warnings, passthrough

IP = IPv4Address("10.101.1.10")
EG = Direction.EGRESS


def _node(enforce_egress: bool, *keys: PolicyKey) -> NodeState:
    return NodeState(
        "node-1",
        endpoints=FrozenMap({IP: EndpointEntry(7, 256, False, enforce_egress)}),
        policies=FrozenMap({7: FrozenMap({k: PolicyEntry(1) for k in keys})}),
    )


def test_dns_warning_only_when_egress_deny_is_new_and_dns_not_allowed() -> None:
    before = {"node-1": _node(False)}
    no_dns = {"node-1": _node(True, PolicyKey(EG, 257, PROTO_TCP, 3000, 16))}
    (w,) = dns_warnings(before, no_dns, Catalog())
    assert "10.101.1.10" in w.summary and "UDP/53" in w.detail and w.node == "node-1"
    dns = {"node-1": _node(True, PolicyKey(EG, 300, PROTO_UDP, 53, 16))}
    assert dns_warnings(before, dns, Catalog()) == []
    udp_range = {"node-1": _node(True, PolicyKey(EG, 0, PROTO_UDP, 0, 10))}  # 0-63
    assert dns_warnings(before, udp_range, Catalog()) == []
    assert dns_warnings(no_dns, no_dns, Catalog()) == []  # already enforced: nothing new


def test_capacity_warns_near_full_policy_map() -> None:
    n = int(POLICY_MAP_SIZE * 0.85)
    keys = [PolicyKey(EG, 256 + i, PROTO_TCP, 80, 16) for i in range(n)]
    warnings = capacity_warnings({"node-1": _node(True, *keys)}, Catalog())
    assert any("nearly full" in w.summary and f"{n} of {POLICY_MAP_SIZE}" in w.detail for w in warnings)
    small = capacity_warnings({"node-1": _node(True, keys[0])}, Catalog())
    assert [w.severity for w in small] == ["info"]


def test_compiler_warnings_pass_through() -> None:
    (w,) = passthrough(["policies/a.yaml:3: toFQDNs not enforced yet\nmore detail"])
    assert w.summary == "policies/a.yaml:3: toFQDNs not enforced yet" and w.detail == "more detail"
