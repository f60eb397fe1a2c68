"""The policy models keep every field Cilium and Kubernetes define, with their semantics."""

from __future__ import annotations

from ipaddress import IPv4Network
from typing import Any

import pytest
from pydantic import ValidationError

from meshctl.model import (
    CiliumClusterwideNetworkPolicy,
    CiliumNetworkPolicy,
    EndpointSelector,
    LabelSelector,
    NetworkPolicy,
)


def cnp(spec: dict[str, Any], **meta: Any) -> CiliumNetworkPolicy:
    return CiliumNetworkPolicy.model_validate(
        {
            "apiVersion": "cilium.io/v2",
            "kind": "CiliumNetworkPolicy",
            "metadata": {"name": "p", **meta},
            "spec": spec,
        }
    )


def knp(spec: dict[str, Any]) -> NetworkPolicy:
    return NetworkPolicy.model_validate(
        {
            "apiVersion": "networking.k8s.io/v1",
            "kind": "NetworkPolicy",
            "metadata": {"name": "p"},
            "spec": spec,
        }
    )


def test_cnp_empty_list_and_one_empty_rule_stay_distinct() -> None:
    empty = cnp({"endpointSelector": {}, "ingress": []}).rules[0]
    one = cnp({"endpointSelector": {}, "ingress": [{}]}).rules[0]
    omitted = cnp({"endpointSelector": {}}).rules[0]
    assert empty.ingress == ()
    assert one.ingress is not None and len(one.ingress) == 1
    assert omitted.ingress is None


def test_cnp_full_rule() -> None:
    policy = cnp(
        {
            "description": "all fields",
            "endpointSelector": {"matchLabels": {"app": "api", "k8s:io.kubernetes.pod.namespace": "demo"}},
            "ingress": [
                {
                    "fromEndpoints": [
                        {"matchExpressions": [{"key": "k8s:app", "operator": "NotIn", "values": ["x"]}]}
                    ],
                    "fromCIDR": ["10.0.0.1", "192.168.0.0/16"],
                    "fromCIDRSet": [{"cidr": "10.0.0.0/8", "except": ["10.1.0.0/16"]}],
                    "fromEntities": ["world", "cluster", "kube-apiserver"],
                    "toPorts": [
                        {
                            "ports": [
                                {"port": 80},
                                {"port": "8000", "endPort": 8100, "protocol": "TCP"},
                                {"port": "http", "protocol": "TCP"},
                            ],
                            "rules": {"http": [{"method": "GET", "path": "/v1/.*"}]},
                        }
                    ],
                }
            ],
            "egress": [
                {
                    "toFQDNs": [{"matchName": "example.com"}],
                    "toPorts": [
                        {
                            "ports": [{"port": "53", "protocol": "ANY"}],
                            "rules": {"dns": [{"matchPattern": "*.example.com"}]},
                        }
                    ],
                }
            ],
            "ingressDeny": [{"fromEntities": ["world"], "toPorts": [{"ports": [{"port": "22"}]}]}],
            "egressDeny": [{"toCIDR": ["1.1.1.1/32"]}],
            "enableDefaultDeny": {"ingress": False},
            "labels": [{"key": "team", "value": "shop"}, "k8s:owner=me"],
        },
        namespace="demo",
    )
    rule = policy.rules[0]
    assert policy.metadata.namespace == "demo"
    assert rule.description == "all fields"
    ing = rule.ingress[0]  # type: ignore[index]
    assert ing.from_cidr == (IPv4Network("10.0.0.1/32"), IPv4Network("192.168.0.0/16"))
    assert ing.from_cidr_set[0].except_ == (IPv4Network("10.1.0.0/16"),)  # type: ignore[index]
    ports = ing.to_ports[0].ports  # type: ignore[index]
    assert [(p.port, p.end_port, p.protocol) for p in ports] == [  # type: ignore[union-attr]
        (80, None, "ANY"),
        (8000, 8100, "TCP"),
        ("http", None, "TCP"),
    ]
    assert ing.to_ports[0].has_l7  # type: ignore[index]
    assert rule.egress[0].to_fqdns[0].match_name == "example.com"  # type: ignore[index]
    assert rule.egress[0].to_ports[0].rules.dns[0].match_pattern == "*.example.com"  # type: ignore[index,union-attr]
    assert rule.ingress_deny[0].to_ports[0].ports[0].port == 22  # type: ignore[index]
    assert rule.enable_default_deny is not None and rule.enable_default_deny.ingress is False
    assert rule.enable_default_deny.egress is None
    assert [(lb.source, lb.key, lb.value) for lb in rule.labels] == [  # type: ignore[union-attr]
        ("", "team", "shop"),
        ("k8s", "owner", "me"),
    ]


def test_snake_case_names_and_yaml_aliases_round_trip() -> None:
    policy = cnp({"endpointSelector": {}, "egress": [{"toCIDRSet": [{"cidr": "10.0.0.0/8"}]}]})
    dumped = policy.model_dump(by_alias=True, exclude_none=True, mode="json")
    assert dumped["spec"]["egress"][0]["toCIDRSet"] == [{"cidr": "10.0.0.0/8"}]
    assert "source" not in dumped
    again = CiliumNetworkPolicy.model_validate(dumped)
    assert again == policy


def test_specs_list_and_spec_together() -> None:
    policy = CiliumNetworkPolicy.model_validate(
        {
            "apiVersion": "cilium.io/v2",
            "kind": "CiliumNetworkPolicy",
            "metadata": {"name": "p"},
            "spec": {"endpointSelector": {"matchLabels": {"a": "1"}}},
            "specs": [{"endpointSelector": {"matchLabels": {"b": "2"}}}],
        }
    )
    assert [r.endpoint_selector.match_labels for r in policy.rules] == [{"a": "1"}, {"b": "2"}]  # type: ignore[union-attr]


def test_models_are_frozen() -> None:
    policy = cnp({"endpointSelector": {}})
    with pytest.raises(ValidationError):
        policy.metadata = policy.metadata  # type: ignore[misc]


def test_namespace_defaults_to_default() -> None:
    assert cnp({"endpointSelector": {}}).metadata.namespace == "default"
    assert knp({"podSelector": {}}).metadata.namespace == "default"


def test_ccnp_has_no_namespace() -> None:
    policy = CiliumClusterwideNetworkPolicy.model_validate(
        {
            "apiVersion": "cilium.io/v2",
            "kind": "CiliumClusterwideNetworkPolicy",
            "metadata": {"name": "c"},
            "spec": {"endpointSelector": {}, "ingress": [{"fromEntities": ["cluster"]}]},
        }
    )
    assert policy.metadata.namespace is None


@pytest.mark.parametrize(
    "entity",
    [
        "all",
        "world",
        "cluster",
        "host",
        "remote-node",
        "kube-apiserver",
        "health",
        "init",
        "ingress",
        "unmanaged",
        "none",
    ],
)
def test_every_entity(entity: str) -> None:
    rule = cnp({"endpointSelector": {}, "egress": [{"toEntities": [entity]}]}).rules[0]
    assert rule.egress[0].to_entities == (entity,)  # type: ignore[index]


def test_rule_without_selector_is_rejected() -> None:
    with pytest.raises(ValidationError, match="endpointSelector"):
        cnp({"ingress": [{}]})


def test_port_zero_means_every_port_and_endport_needs_number() -> None:
    rule = cnp(
        {"endpointSelector": {}, "ingress": [{"toPorts": [{"ports": [{"port": "0", "protocol": "UDP"}]}]}]}
    )
    assert rule.rules[0].ingress[0].to_ports[0].ports[0].port == 0  # type: ignore[index]
    with pytest.raises(ValidationError, match="named port"):
        cnp(
            {"endpointSelector": {}, "ingress": [{"toPorts": [{"ports": [{"port": "http", "endPort": 90}]}]}]}
        )


def test_l7_rules_cannot_mix_http_and_dns() -> None:
    with pytest.raises(ValidationError, match="http or dns"):
        cnp(
            {
                "endpointSelector": {},
                "egress": [{"toPorts": [{"rules": {"http": [{}], "dns": [{"matchName": "a"}]}}]}],
            }
        )


def test_k8s_network_policy_fields() -> None:
    policy = knp(
        {
            "podSelector": {"matchLabels": {"app": "db"}},
            "policyTypes": ["Ingress", "Egress"],
            "ingress": [
                {
                    "from": [
                        {"podSelector": {}, "namespaceSelector": {"matchLabels": {"team": "a"}}},
                        {"ipBlock": {"cidr": "10.0.0.0/8", "except": ["10.1.0.0/16"]}},
                    ],
                    "ports": [
                        {"port": 5432},
                        {"port": "postgres", "protocol": "TCP"},
                        {"port": 6000, "endPort": 6010, "protocol": "SCTP"},
                        {"protocol": "UDP"},
                    ],
                }
            ],
            "egress": [{"to": [{"namespaceSelector": {}}]}],
        }
    )
    spec = policy.spec
    peer0, peer1 = spec.ingress[0].from_  # type: ignore[index,misc]
    assert peer0.pod_selector is not None and peer0.pod_selector.is_empty
    assert peer0.namespace_selector.match_labels == {"team": "a"}  # type: ignore[union-attr]
    assert peer1.ip_block.except_ == (IPv4Network("10.1.0.0/16"),)  # type: ignore[union-attr]
    ports = spec.ingress[0].ports  # type: ignore[index]
    assert [(p.port, p.end_port, p.protocol) for p in ports] == [  # type: ignore[union-attr]
        (5432, None, "TCP"),
        ("postgres", None, "TCP"),
        (6000, 6010, "SCTP"),
        (None, None, "UDP"),
    ]


def test_policy_types_defaulting() -> None:
    assert knp({"podSelector": {}}).spec.effective_policy_types == ("Ingress",)
    assert knp({"podSelector": {}, "egress": []}).spec.effective_policy_types == ("Ingress",)
    assert knp({"podSelector": {}, "egress": [{}]}).spec.effective_policy_types == ("Ingress", "Egress")
    assert knp({"podSelector": {}, "policyTypes": ["Egress"]}).spec.effective_policy_types == ("Egress",)
    with pytest.raises(ValidationError, match="twice"):
        knp({"podSelector": {}, "policyTypes": ["Egress", "Egress"]})


def test_k8s_selector_rejects_cilium_source_prefix() -> None:
    with pytest.raises(ValidationError, match="not a valid label key"):
        LabelSelector.model_validate({"matchLabels": {"k8s:app": "x"}})
    sel = EndpointSelector.model_validate({"matchLabels": {"k8s:app": "x", "reserved:host": ""}})
    assert sel.match_labels == {"k8s:app": "x", "reserved:host": ""}


def test_selector_matches_kubernetes_semantics() -> None:
    sel = LabelSelector.model_validate(
        {
            "matchLabels": {"app": "db"},
            "matchExpressions": [
                {"key": "tier", "operator": "In", "values": ["a", "b"]},
                {"key": "legacy", "operator": "DoesNotExist"},
                {"key": "env", "operator": "NotIn", "values": ["dev"]},
                {"key": "team", "operator": "Exists"},
            ],
        }
    )
    assert sel.matches({"app": "db", "tier": "a", "team": "x"})
    assert sel.matches({"app": "db", "tier": "b", "team": "x", "env": "prod"})
    assert not sel.matches({"app": "db", "tier": "c", "team": "x"})
    assert not sel.matches({"app": "db", "tier": "a", "team": "x", "legacy": "1"})
    assert not sel.matches({"app": "db", "tier": "a", "team": "x", "env": "dev"})
    assert not sel.matches({"app": "db", "tier": "a"})
    assert LabelSelector().matches({"anything": "x"})


@pytest.mark.parametrize("key", ["app", "example.com/app", "a_b.c-d", "io.kubernetes.pod.namespace"])
def test_valid_label_keys(key: str) -> None:
    assert LabelSelector.model_validate({"matchLabels": {key: "v"}}).match_labels == {key: "v"}


@pytest.mark.parametrize("key", ["", "-app", "Example.com/app", "/app", "a" * 64, "a b"])
def test_invalid_label_keys(key: str) -> None:
    with pytest.raises(ValidationError, match="label key"):
        LabelSelector.model_validate({"matchLabels": {key: "v"}})
