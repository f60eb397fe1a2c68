"""The node's Envoy configuration: RBAC made from HttpPolicies, read back, validated by Envoy."""

from __future__ import annotations

from ipaddress import IPv4Address, IPv4Network

import pytest

from meshctl.dataplane import envoy_config as cfg
from meshctl.dataplane.envoy import validate
from meshctl.nodestate import Direction, HttpPolicy, HttpRule, IpcacheEntry
from meshctl.plan import codec
from meshctl.plan.change import ChangeKind
from meshctl.plan.diff import diff_node
from meshctl.plan.patch import apply_changes

API = IPv4Address("10.1.2.2")
IPCACHE = {IPv4Network("10.1.1.2/32"): IpcacheEntry(258, 0), IPv4Network("10.1.1.3/32"): IpcacheEntry(258, 0),
           IPv4Network("10.1.2.2/32"): IpcacheEntry(256, 0), IPv4Network("10.1.3.0/24"): IpcacheEntry(6, 0)}
SEED = (HttpRule("GET", "/api/v1/products.*"), HttpRule("GET", "/api/v1/users/[0-9]+"),
        HttpRule("POST", "/api/v1/orders", headers=("Content-Type: application/json",)))


def _policy(identity: int = 258, rules: tuple[HttpRule, ...] = SEED, **kw: object) -> HttpPolicy:
    fields = {"endpoint": API, "direction": Direction.INGRESS, "port": 3000, "last_port": 3000,
              "identity": identity, "cookie": 77, "rules": rules, **kw}
    return HttpPolicy(**fields)  # type: ignore[arg-type]


def test_each_rule_is_one_rbac_policy_on_the_endpoint_port_and_the_peers_addresses() -> None:
    policies = cfg.rbac_policies({_policy()}, IPCACHE)
    assert list(policies) == [cfg.policy_name(_policy(), i) for i in range(3)]
    post = policies[cfg.policy_name(_policy(), 2)]
    assert post["principals"] == [{"or_ids": {"ids": [
        {"direct_remote_ip": {"address_prefix": "10.1.1.2", "prefix_len": 32}},
        {"direct_remote_ip": {"address_prefix": "10.1.1.3", "prefix_len": 32}}]}}]
    assert post["permissions"] == [{"and_rules": {"rules": [
        {"destination_ip": {"address_prefix": "10.1.2.2", "prefix_len": 32}},
        {"destination_port": 3000},
        {"header": {"name": ":method", "string_match": {"safe_regex": {"regex": "POST"}}}},
        {"header": {"name": ":path", "string_match": {"safe_regex": {"regex": "/api/v1/orders"}}}},
        {"header": {"name": "Content-Type", "string_match": {"exact": "application/json"}}},
    ]}}]


def test_peers_any_world_and_unknown_and_egress_and_ranges() -> None:
    anyone = cfg.rbac_policies({_policy(0)}, IPCACHE)[cfg.policy_name(_policy(0), 0)]
    assert anyone["principals"] == [{"any": True}]
    world = cfg.rbac_policies({_policy(2)}, IPCACHE)[cfg.policy_name(_policy(2), 0)]["principals"][0]
    assert len(world["not_id"]["or_ids"]["ids"]) == 4  # every address the ipcache knows is not world
    assert cfg.rbac_policies({_policy(999)}, IPCACHE) == {}  # an identity with no address here: nothing
    egress = _policy(256, endpoint=IPv4Address("10.1.1.2"), direction=Direction.EGRESS, port=8000,
                     last_port=8003)
    rule = cfg.rbac_policies({egress}, IPCACHE)[cfg.policy_name(egress, 0)]
    assert rule["principals"] == [{"direct_remote_ip": {"address_prefix": "10.1.1.2", "prefix_len": 32}}]
    where = rule["permissions"][0]["and_rules"]["rules"]
    api = {"destination_ip": {"address_prefix": "10.1.2.2", "prefix_len": 32}}
    assert where[0] == {"or_rules": {"rules": [api]}}
    assert where[1] == {"destination_port_range": {"start": 8000, "end": 8004}}


def test_the_rows_come_back_from_a_config_dump_and_the_version_names_the_content() -> None:
    route = cfg.route_config({_policy(), _policy(0)}, IPCACHE)
    doc = cfg.routes_file(route)
    # what /config_dump?resource=dynamic_route_configs answers
    dump = {"configs": [{"version_info": doc["version_info"], "route_config": route}]}
    assert cfg.http_from_dump(dump) == frozenset({_policy(), _policy(0)})
    assert cfg.version_from_dump(dump) == doc["version_info"]
    assert cfg.routes_file(cfg.route_config({_policy()}, IPCACHE))["version_info"] != doc["version_info"]
    assert cfg.http_from_dump({"configs": []}) is None


def test_envoy_itself_accepts_the_routes_and_refuses_an_re2_incompatible_regex() -> None:
    assert validate(cfg.route_config({_policy(), _policy(0, (HttpRule(),))}, IPCACHE)) is None
    lookahead = _policy(rules=(HttpRule("GET", "/users/(?=admin)"),))  # Python's re takes it, RE2 not
    err = validate(cfg.route_config({lookahead}, IPCACHE))
    assert err is not None and "(?=" in err


def test_http_rule_changes_diff_and_patch_back_exactly() -> None:
    from meshctl.catalog import Catalog
    from meshctl.nodestate import NodeState

    before = NodeState("n", http=frozenset({_policy(), _policy(0)}))
    after = NodeState("n", http=frozenset({_policy(rules=SEED[:1]), _policy(259)}))
    changes = diff_node(before, after, Catalog())
    kinds = {(c.kind, c.action.name) for c in changes}
    assert kinds == {(ChangeKind.HTTP_RULE, "UPDATE"), (ChangeKind.HTTP_RULE, "CREATE"),
                     (ChangeKind.HTTP_RULE, "DELETE")}
    assert apply_changes(before, changes) == after
    moved = next(c for c in changes if c.action.name == "UPDATE")
    assert codec.http_from(moved.key, moved.after) == _policy(rules=SEED[:1])  # type: ignore[arg-type]
    with pytest.raises(Exception, match="does not match the plan"):
        apply_changes(NodeState("n"), changes)
