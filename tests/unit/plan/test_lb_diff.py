"""Plan diff of the load balancer: readable addresses, make-before-break order, replace on settings."""

from __future__ import annotations

from dataclasses import replace
from ipaddress import IPv4Address

from meshctl.compile.services import LbNode, compile_load_balancer
from meshctl.model.config import LoadBalancerSettings
from meshctl.model.inventory import Pod
from meshctl.model.service import Service, ServicePort
from meshctl.nodestate import FrozenMap, NodeState
from meshctl.plan.action import Action
from meshctl.plan.change import ChangeKind
from meshctl.plan.diff import diff_node
from meshctl.plan.loadbalancer import lb_warnings
from meshctl.plan.patch import apply_changes

NODES = (LbNode("node-1", IPv4Address("172.31.250.1")),)
SVC = Service(namespace="demo", name="api", cluster_ip=IPv4Address("10.96.0.10"), selector={"app": "api"},
              ports=(ServicePort(port=80, target_port=3000),))


def pods(*ips: str) -> list[Pod]:
    return [Pod(namespace="demo", name=f"p{i}", labels={"app": "api"}, node_name="node-1", podIP=ip)
            for i, ip in enumerate(ips)]


def state(ips: tuple[str, ...], **kw: object) -> NodeState:
    s = LoadBalancerSettings(kube_proxy_replacement=True, **kw)  # type: ignore[arg-type]
    return NodeState("node-1", load_balancer=compile_load_balancer([SVC], pods(*ips), NODES, s)["node-1"])


def test_addresses_and_backends_added_before_removed() -> None:
    before = state(("10.101.2.7", "10.101.2.8"))
    after = state(("10.101.2.8", "10.101.2.9"))
    changes = diff_node(before, after)
    addrs = [(c.address, c.action) for c in changes]
    assert addrs == [
        ("node-1 backend 10.101.2.9:3000/TCP", Action.CREATE),
        ("node-1 service demo/api 10.96.0.10:80/TCP", Action.UPDATE),
        ("node-1 backend 10.101.2.7:3000/TCP", Action.DELETE),
    ]
    assert apply_changes(before, changes) == after


def test_from_nothing_and_back_round_trips() -> None:
    empty, full = NodeState("node-1"), state(("10.101.2.7",), algorithm="maglev", maglev_table_size=251)
    assert apply_changes(empty, diff_node(empty, full)) == full
    assert apply_changes(full, diff_node(full, empty)) == empty
    assert diff_node(full, full) == ()


def test_settings_change_is_a_replace_with_a_warning() -> None:
    before = state(("10.101.2.7",))
    after = state(("10.101.2.7",), algorithm="maglev", maglev_table_size=251)
    changes = diff_node(before, after)
    head = [c for c in changes if c.kind is ChangeKind.LOAD_BALANCER]
    assert len(head) == 1 and head[0].action is Action.REPLACE
    assert head[0].reason.startswith("settings algorithm=random -> algorithm=maglev, tableSize=16381 -> "
                                     "tableSize=251: apply flushes")
    assert "lb_flows" in head[0].reason and "break" in head[0].reason
    [warning] = lb_warnings({"node-1": before}, {"node-1": after})
    assert "algorithm=maglev" in warning.summary and "break" in warning.detail
    assert lb_warnings({"node-1": before}, {"node-1": replace(before)}) == []
    assert apply_changes(before, changes) == after


def test_observed_services_without_names_show_no_name_change() -> None:
    """Observe cannot know a service's name: the plan must not show `name: "" -> "demo/api"`."""
    before = state(("10.101.2.7",))
    after = state(("10.101.2.7",), mode="dsr")
    unnamed = {f: replace(s, name="") for f, s in before.load_balancer.services.items()}
    observed = replace(before, load_balancer=replace(before.load_balancer, services=FrozenMap(unnamed)))
    changes = [c for c in diff_node(observed, after) if c.kind is ChangeKind.LB_SERVICE]
    assert changes == []  # a ClusterIP is never DSR: only the settings change on this node
    after2 = state(("10.101.2.7", "10.101.2.8"))
    [svc] = [c for c in diff_node(observed, after2) if c.kind is ChangeKind.LB_SERVICE]
    assert svc.before["name"] == svc.after["name"] == "demo/api"
    assert apply_changes(observed, diff_node(observed, after2)) == after2
