"""The plan refuses a desired state that would overflow a BPF map, naming map, node and setting."""

from __future__ import annotations

from ipaddress import IPv4Address

import pytest

from meshctl.catalog import Catalog
from meshctl.compile import EndpointTable, IdentityTable
from meshctl.compile.cluster import compile_spec
from meshctl.compile.documents import as_document
from meshctl.compile.spec import ClusterSpec, PodSpec
from meshctl.dataplane import structs as S
from meshctl.errors import CompileError
from meshctl.nodestate import EndpointEntry, FrozenMap, NodeState
from meshctl.plan import build_plan
from meshctl.plan.capacity import overflows


def _spec(ports: int) -> ClusterSpec:
    """20 identities in one namespace; web admits all of them on `ports` odd (unmergeable) ports."""
    pods = tuple(
        PodSpec("shop", f"app{i}-0", {"app": f"app{i}"}, "node-1", (), IPv4Address(f"10.1.0.{i + 1}"))
        for i in range(20)
    )
    listed = [{"port": str(1001 + 2 * i), "protocol": "TCP"} for i in range(ports)]
    policy = as_document({
        "apiVersion": "cilium.io/v2", "kind": "CiliumNetworkPolicy",
        "metadata": {"name": "wide", "namespace": "shop"},
        "spec": {
            "endpointSelector": {"matchLabels": {"app": "app0"}},
            "ingress": [{
                "fromEndpoints": [{}],
                "toPorts": [{"ports": listed}],
            }],
        },
    })
    return ClusterSpec("cap", ("node-1", "node-2"), {"shop": {}}, pods, (policy,))


def test_a_policy_map_over_capacity_is_a_plan_error_naming_map_node_endpoint_and_setting() -> None:
    compiled = compile_spec(_spec(900), IdentityTable(), EndpointTable(), "b")  # 20 x 900 > 16,384
    intended = compiled.nodes
    with pytest.raises(CompileError) as err:
        build_plan({}, intended, compiled.catalog, impact=False)
    msg = str(err.value)
    assert "node node-1: map policy map would overflow: endpoint shop/app0-0 needs 18000 entries" in msg
    assert f"capacity {S.POLICY_MAP_SIZE}; raise POLICY_MAP_SIZE in bpf/lib/common.h" in msg
    assert "node-2" not in msg  # only the node that holds the endpoint


def test_a_map_just_at_capacity_plans() -> None:
    ports = S.POLICY_MAP_SIZE // 20  # 819 ports x 20 identities = 16,380 entries
    compiled = compile_spec(_spec(ports), IdentityTable(), EndpointTable(), "b")
    plan = build_plan({}, compiled.nodes, compiled.catalog, impact=False)
    assert plan.has_changes
    assert any("nearly full" in w.summary for w in plan.warnings)  # still warned


def test_every_overflowing_map_is_named_with_its_setting() -> None:
    endpoints = FrozenMap({
        IPv4Address(int(IPv4Address("10.0.0.0")) + i): EndpointEntry(i + 1, 256, False, False)
        for i in range(S.ENDPOINTS_MAP_SIZE + 1)
    })
    found = list(overflows({"node-7": NodeState("node-7", endpoints=endpoints)}, Catalog()))
    assert [(o.node, o.map_name, o.entries, o.setting) for o in found] == [
        ("node-7", "endpoints", S.ENDPOINTS_MAP_SIZE + 1, "ENDPOINTS_MAP_SIZE")
    ]
    assert list(overflows({"node-7": NodeState("node-7")}, Catalog())) == []
