"""compile_load_balancer: services + pods -> per-node LoadBalancerState (pure)."""

from __future__ import annotations

from collections import Counter
from ipaddress import IPv4Address

from meshctl.compile.services import LbNode, compile_load_balancer, frontend_nodes, stable_ids
from meshctl.model.config import LoadBalancerSettings
from meshctl.model.inventory import Pod
from meshctl.model.service import Service, ServicePort
from meshctl.nodestate import PROTO_TCP, LbFrontend, LoadBalancerState, NodeState

NODES = (LbNode("node-1", IPv4Address("172.31.250.1")), LbNode("node-2", IPv4Address("172.31.250.2")))
VIP = IPv4Address("10.96.0.10")


def pod(name: str, ip: str, node: str, app: str = "api") -> Pod:
    return Pod(namespace="demo", name=name, labels={"app": app}, node_name=node, podIP=ip,
               ports=({"name": "http", "containerPort": 3000},))


PODS = (pod("a", "10.1.0.5", "node-1"), pod("b", "10.2.0.5", "node-2"), pod("c", "10.2.0.6", "node-2"),
        pod("other", "10.1.0.9", "node-1", app="web"))


def service(**kw: object) -> Service:
    base: dict[str, object] = dict(namespace="demo", name="api", cluster_ip=VIP, selector={"app": "api"},
                                   ports=(ServicePort(port=80, target_port="http", node_port=30080),))
    base.update(kw)
    return Service(**base)  # type: ignore[arg-type]


def settings(**kw: object) -> LoadBalancerSettings:
    return LoadBalancerSettings(kube_proxy_replacement=True, **kw)  # type: ignore[arg-type]


def test_off_compiles_nothing() -> None:
    assert compile_load_balancer([service()], PODS, NODES, LoadBalancerSettings()) == {}


def test_clusterip_selects_backends_by_label_and_named_port() -> None:
    out = compile_load_balancer([service()], PODS, NODES, settings())
    st = out["node-1"]
    svc = st.services[LbFrontend(VIP, 80, PROTO_TCP)]
    assert svc.name == "demo/api" and not svc.external and not svc.maglev
    addrs = sorted(str(st.backends[i].address) for i in svc.backends)
    assert addrs == ["10.1.0.5", "10.2.0.5", "10.2.0.6"]
    assert {st.backends[i].port for i in svc.backends} == {3000}
    assert [st.backends[i].local for i in svc.backends] == [str(st.backends[i].address) == "10.1.0.5"
                                                              for i in svc.backends]
    assert out["node-1"].services[LbFrontend(VIP, 80, PROTO_TCP)] == out["node-2"].services[
        LbFrontend(VIP, 80, PROTO_TCP)]


def test_nodeport_is_one_frontend_per_node_address_and_local_policy_keeps_local_backends() -> None:
    out = compile_load_balancer([service(type="NodePort", external_traffic_policy="Local")], PODS, NODES,
                                settings())
    n2 = out["node-2"]
    np2 = n2.services[LbFrontend(IPv4Address("172.31.250.2"), 30080, PROTO_TCP)]
    assert np2.external
    assert sorted(str(n2.backends[i].address) for i in np2.backends) == ["10.2.0.5", "10.2.0.6"]
    assert LbFrontend(IPv4Address("172.31.250.1"), 30080, PROTO_TCP) not in n2.services
    assert len(n2.services[LbFrontend(VIP, 80, PROTO_TCP)].backends) == 3  # ClusterIP keeps all


def test_loadbalancer_and_external_ips_are_external_frontends_with_dsr_by_mode() -> None:
    svc = service(type="LoadBalancer", load_balancer_ip=IPv4Address("192.0.2.50"),
                  external_ips=(IPv4Address("192.0.2.51"),))
    for mode, dsr in (("snat", False), ("dsr", True), ("hybrid", True)):
        st = compile_load_balancer([svc], PODS, NODES, settings(mode=mode))["node-1"]
        for ip in ("192.0.2.50", "192.0.2.51"):
            fe = st.services[LbFrontend(IPv4Address(ip), 80, PROTO_TCP)]
            assert fe.external and fe.dsr is dsr
        assert not st.services[LbFrontend(VIP, 80, PROTO_TCP)].dsr


def test_maglev_table_is_identical_on_every_node_and_spreads() -> None:
    out = compile_load_balancer([service()], PODS, NODES, settings(algorithm="maglev", maglev_table_size=251))
    t1 = out["node-1"].services[LbFrontend(VIP, 80, PROTO_TCP)].maglev
    t2 = out["node-2"].services[LbFrontend(VIP, 80, PROTO_TCP)].maglev
    assert t1 == t2 and len(t1) == 251
    counts = Counter(t1)
    assert len(counts) == 3 and max(counts.values()) - min(counts.values()) <= 3


def test_removing_a_backend_moves_only_its_maglev_slots() -> None:
    s = settings(algorithm="maglev", maglev_table_size=1021)
    fe = LbFrontend(VIP, 80, PROTO_TCP)
    before = compile_load_balancer([service()], PODS, NODES, s)["node-1"].services[fe]
    after = compile_load_balancer([service()], PODS[1:], NODES, s)["node-1"].services[fe]
    gone = set(before.backends) - set(after.backends)
    moved = sum(1 for a, b in zip(before.maglev, after.maglev, strict=True) if a != b and a not in gone)
    assert moved / len(before.maglev) < 0.1  # only the removed backend's ~1/3 of slots change owner


def test_ids_are_stable_when_other_backends_come_and_go() -> None:
    a = stable_ids(["10.1.0.5:3000/TCP", "10.2.0.5:3000/TCP"])
    b = stable_ids(["10.2.0.5:3000/TCP"])
    assert a["10.2.0.5:3000/TCP"] == b["10.2.0.5:3000/TCP"]


def test_affinity_and_canonical_round_trip() -> None:
    out = compile_load_balancer([service(session_affinity="ClientIP", session_affinity_timeout=300)], PODS,
                                NODES, settings(algorithm="maglev", maglev_table_size=251))
    st = out["node-1"]
    assert st.services[LbFrontend(VIP, 80, PROTO_TCP)].affinity_timeout_s == 300
    node = NodeState("node-1", load_balancer=st)
    assert NodeState.from_canonical(node.canonical()) == node
    assert NodeState.from_canonical(NodeState("x").canonical()).load_balancer == LoadBalancerState()


def test_frontend_nodes_name_the_backends_nodes_of_each_service_address() -> None:
    lb = service(type="LoadBalancer", load_balancer_ingress=(IPv4Address("192.0.2.50"),))
    web = service(name="web", cluster_ip=IPv4Address("10.96.0.11"), selector={"app": "web"})
    assert frontend_nodes([lb, web], PODS) == {
        "10.96.0.10": ("node-1", "node-2"), "192.0.2.50": ("node-1", "node-2"), "10.96.0.11": ("node-1",)}
