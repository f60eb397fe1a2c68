"""HTTP rules compile into proxy redirects and the proxy's rules, with Cilium's semantics."""

from __future__ import annotations

from ipaddress import IPv4Address

import pytest

from meshctl.compile import EndpointTable, IdentityTable, compile_spec
from meshctl.compile.documents import as_document
from meshctl.compile.spec import ClusterSpec, PodSpec
from meshctl.errors import CompileError
from meshctl.nodestate import HTTP_PROXY_PORT, PROTO_TCP, PROTO_UDP, Direction, HttpRule

A, B, C = IPv4Address("10.0.0.1"), IPv4Address("10.0.0.2"), IPv4Address("10.0.1.3")
FROM_B = [{"matchLabels": {"app": "b"}}]


def _compile(*rules: dict, kind: str = "ingress") -> object:
    pods = (
        PodSpec("demo", "a", {"app": "a"}, "n1", (("http", 8080, "TCP"),), A),
        PodSpec("demo", "b", {"app": "b"}, "n1", (), B),
        PodSpec("demo", "c", {"app": "c"}, "n2", (), C),
    )
    doc = {"kind": "CiliumNetworkPolicy", "metadata": {"name": "p", "namespace": "demo"},
           "spec": {"endpointSelector": {"matchLabels": {"app": "a"}}, kind: list(rules)}}
    spec = ClusterSpec("t", ("n1", "n2"), {"demo": {}}, pods, (as_document(doc),), "default")
    return compile_spec(spec, IdentityTable(), EndpointTable(), "h")


def _http(port: str, *rules: dict, proto: str = "TCP") -> dict:
    return {"ports": [{"port": port, "protocol": proto}], "rules": {"http": list(rules)}}


def _entries(c: object, node: str = "n1") -> dict:
    state = c.nodes[node]  # type: ignore[attr-defined]
    ep = state.endpoints[A].endpoint_id
    return dict(state.policies[ep])


def test_an_http_rule_sends_its_port_to_the_proxy_and_gives_the_proxy_the_rules() -> None:
    c = _compile({"fromEndpoints": FROM_B, "toPorts": [_http("80", {"method": "GET", "path": "/api/.*"})]})
    entries = _entries(c)
    (key, entry), = entries.items()
    assert (key.protocol, key.port, key.port_prefix, entry.proxy_port) == (PROTO_TCP, 80, 16, HTTP_PROXY_PORT)
    (policy,) = c.nodes["n1"].http  # type: ignore[attr-defined]
    b_id = c.nodes["n1"].endpoints[B].identity  # type: ignore[attr-defined]
    assert (policy.endpoint, policy.direction, policy.port, policy.last_port, policy.identity) == (
        A, Direction.INGRESS, 80, 80, b_id)
    assert policy.rules == (HttpRule("GET", "/api/.*"),) and policy.cookie == entry.cookie
    assert not c.nodes["n2"].http  # type: ignore[attr-defined]
    # only the node with L7 ports pays for the datapath's socket lookups
    assert c.nodes["n1"].config.proxy and not c.nodes["n2"].config.proxy  # type: ignore[attr-defined]


def test_headers_are_split_as_cilium_does_and_header_matches_are_kept() -> None:
    rule = {"method": "POST", "headers": ["Content-Type: application/json", "X-Token"],
            "headerMatches": [{"name": "X-Env", "value": "prod"}, {"name": "X-Trace"}]}
    c = _compile({"fromEndpoints": FROM_B, "toPorts": [_http("80", rule)]})
    (policy,) = c.nodes["n1"].http  # type: ignore[attr-defined]
    assert policy.rules == (HttpRule("POST", "", "", ("Content-Type: application/json", "X-Token"),
                                     (("X-Env", "prod"), ("X-Trace", ""))),)


def test_an_l4_allow_of_every_peer_on_the_port_wildcards_l7() -> None:
    c = _compile({"fromEndpoints": FROM_B, "toPorts": [_http("80", {"method": "GET"})]},
                 {"toPorts": [{"ports": [{"port": "80", "protocol": "TCP"}]}]})
    assert not any(e.proxy_port for e in _entries(c).values())
    assert not c.nodes["n1"].http  # type: ignore[attr-defined]
    assert any(w.code == "l7-ineffective" for w in c.warnings)  # type: ignore[attr-defined]


def test_any_protocol_with_http_rules_means_tcp_and_other_protocols_are_refused() -> None:
    c = _compile({"fromEndpoints": FROM_B, "toPorts": [_http("80", {"method": "GET"}, proto="ANY")]})
    assert {(k.protocol, k.port) for k in _entries(c)} == {(PROTO_TCP, 80)}
    assert PROTO_UDP not in {k.protocol for k in _entries(c)}
    where = r"ingress\[0\]\.toPorts\[0\]\.ports\[0\]\.protocol"
    with pytest.raises(CompileError, match=where + ": HTTP rules apply to TCP ports only"):
        _compile({"fromEndpoints": FROM_B, "toPorts": [_http("53", {"method": "GET"}, proto="UDP")]})


def test_a_port_range_with_http_rules_is_proxied_over_the_whole_range() -> None:
    tp = {"ports": [{"port": "8000", "endPort": 8003, "protocol": "TCP"}], "rules": {"http": [{}]}}
    c = _compile({"fromEndpoints": FROM_B, "toPorts": [tp]})
    got = {(k.port, k.port_prefix, e.proxy_port) for k, e in _entries(c).items()}
    assert got == {(8000, 14, HTTP_PROXY_PORT)}
    (policy,) = c.nodes["n1"].http  # type: ignore[attr-defined]
    assert (policy.port, policy.last_port, policy.ports) == (8000, 8003, "8000-8003")
    assert policy.rules == (HttpRule(),)  # `http: [{}]`: every request


def test_egress_http_rules_are_the_proxy_rules_of_the_client() -> None:
    c = _compile({"toEndpoints": [{"matchLabels": {"app": "c"}}], "toPorts": [_http("80", {"path": "/x"})]},
                 kind="egress")
    (policy,) = c.nodes["n1"].http  # type: ignore[attr-defined]
    assert policy.direction == Direction.EGRESS and policy.endpoint == A
    assert policy.identity == c.nodes["n2"].endpoints[C].identity  # type: ignore[attr-defined]


def test_a_deny_rule_cannot_carry_l7_rules() -> None:
    from meshctl.app.increment.replan import documents
    from meshctl.errors import SourceError

    text = """apiVersion: cilium.io/v2
kind: CiliumNetworkPolicy
metadata: {name: p, namespace: demo}
spec:
  endpointSelector: {}
  ingressDeny:
    - toPorts:
        - ports: [{port: "80"}]
          rules:
            http: [{method: GET}]
"""
    with pytest.raises(SourceError, match=r"p\.yaml:9: .*ingressDeny\[0\]\.toPorts\[0\]\.rules"):
        documents("p.yaml", text)
