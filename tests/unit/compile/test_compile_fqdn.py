"""toFQDNs compiles to one identity per selector (the IPs the DNS proxy learns for it), and the
trap of DNS allowed without `rules.dns` is named with its fix."""

from __future__ import annotations

from ipaddress import IPv4Address

from meshctl.compile import EndpointTable, IdentityTable, compile_spec
from meshctl.compile.documents import as_document
from meshctl.compile.spec import ClusterSpec, PodSpec
from meshctl.nodestate import DNS_PROXY_PORT, PROTO_TCP, PROTO_UDP, Direction, ReservedIdentity

A, DNS = IPv4Address("10.0.0.1"), IPv4Address("10.0.0.53")
KUBE_DNS = [{"matchLabels": {"k8s:io.kubernetes.pod.namespace": "kube-system", "k8s-app": "kube-dns"}}]
STRIPE = {"toFQDNs": [{"matchName": "api.stripe.com"}, {"matchPattern": "*.amazonaws.com"}],
          "toPorts": [{"ports": [{"port": "443", "protocol": "TCP"}]}]}


def _dns(rules: dict | None = None) -> dict:
    port = {"ports": [{"port": "53", "protocol": "UDP"}]}
    return {"toEndpoints": KUBE_DNS, "toPorts": [{**port, **({"rules": rules} if rules else {})}]}


def _compile(*egress: dict, identities: IdentityTable | None = None) -> object:
    pods = (PodSpec("demo", "payment", {"app": "payment"}, "n1", (), A),
            PodSpec("kube-system", "kube-dns", {"k8s-app": "kube-dns"}, "n1", (), DNS))
    doc = {"kind": "CiliumNetworkPolicy", "metadata": {"name": "payment-egress", "namespace": "demo"},
           "spec": {"endpointSelector": {"matchLabels": {"app": "payment"}}, "egress": list(egress)}}
    spec = ClusterSpec("t", ("n1",), {"demo": {}, "kube-system": {}}, pods, (as_document(doc),), "default")
    return compile_spec(spec, identities or IdentityTable(), EndpointTable(), "h")


def _egress(c: object) -> dict:
    state = c.nodes["n1"]  # type: ignore[attr-defined]
    return {k: v for k, v in state.policies[state.endpoints[A].endpoint_id].items()
            if k.direction == Direction.EGRESS}


def test_each_selector_gets_an_identity_that_is_allowed_and_selects_no_ip_until_learned() -> None:
    c = _compile(STRIPE, _dns({"dns": [{"matchPattern": "*"}]}))
    table = c.identities  # type: ignore[attr-defined]
    stripe, aws = table.get(("fqdn:api.stripe.com",)), table.get(("fqdn:*.amazonaws.com",))
    assert stripe and aws and stripe != aws
    ports = {(k.identity, k.protocol, k.port) for k in _egress(c)}
    assert {(stripe, PROTO_TCP, 443), (aws, PROTO_TCP, 443)} <= ports
    # nothing in the ipcache carries them: a selector that learned no IP selects nothing
    assert not {stripe, aws} & {e.identity for e in c.nodes["n1"].ipcache.values()}  # type: ignore[attr-defined]
    catalog = c.catalog  # type: ignore[attr-defined]
    assert catalog.identities[stripe].labels == ("fqdn:api.stripe.com", "reserved:world")
    assert not any(w.code.startswith("fqdn") for w in c.warnings)  # type: ignore[attr-defined]


def test_selector_identities_are_stable_across_compiles_and_new_ones_take_new_numbers() -> None:
    first = _compile(STRIPE, _dns({"dns": [{"matchPattern": "*"}]}))
    table = first.identities  # type: ignore[attr-defined]
    paypal = {"toFQDNs": [{"matchName": "api.paypal.com"}]}
    again = _compile(paypal, STRIPE, _dns({"dns": [{"matchPattern": "*"}]}), identities=table)
    after = again.identities  # type: ignore[attr-defined]
    for labels in (("fqdn:api.stripe.com",), ("fqdn:*.amazonaws.com",)):
        assert after.get(labels) == table.get(labels)
    assert after.get(("fqdn:api.paypal.com",)) >= table.next_id


def test_world_selects_the_learned_ips_too() -> None:
    c = _compile({"toEntities": ["world"]}, STRIPE)
    stripe = c.identities.get(("fqdn:api.stripe.com",))  # type: ignore[attr-defined]
    world_keys = {k.identity for k in _egress(c) if k.port == 0}
    assert {ReservedIdentity.WORLD, stripe} <= world_keys


def test_dns_allowed_without_dns_rules_is_the_trap_and_names_the_rule_and_the_fix() -> None:
    c = _compile(STRIPE, _dns())
    (w,) = [w for w in c.warnings if w.code == "fqdn-not-learned"]  # type: ignore[attr-defined]
    text = str(w)
    assert text.startswith("CiliumNetworkPolicy demo/payment-egress egress[0]")
    assert "api.stripe.com" in text and "will be dropped" in text
    assert "egress[1]" in text and "without `rules.dns`" in text
    assert 'add `rules: {dns: [{matchPattern: "*"}]}`' in text


def test_no_dns_rule_at_all_says_so_and_a_dns_rule_anywhere_clears_it() -> None:
    (w,) = [w for w in _compile(STRIPE).warnings if w.code == "fqdn-not-learned"]  # type: ignore[attr-defined]
    assert "no egress rule of this endpoint allows DNS" in str(w)
    c = _compile(STRIPE, _dns({"dns": [{"matchName": "api.stripe.com"}]}))
    assert not [w for w in c.warnings if w.code == "fqdn-not-learned"]  # type: ignore[attr-defined]


def test_match_pattern_star_warns_and_suggests_world() -> None:
    c = _compile({"toFQDNs": [{"matchPattern": "*"}]}, _dns({"dns": [{"matchPattern": "*"}]}))
    (w,) = [w for w in c.warnings if w.code == "fqdn-wildcard"]  # type: ignore[attr-defined]
    assert "toEntities: [world]" in str(w)


def _dns_state(c: object) -> tuple[frozenset, object]:
    state = c.nodes["n1"]  # type: ignore[attr-defined]
    return state.dns, state.fqdn


def test_dns_rules_send_port_53_to_the_dns_proxy_with_their_names() -> None:
    c = _compile(STRIPE, _dns({"dns": [{"matchPattern": "*.stripe.com"}, {"matchName": "API.Paypal.com"}]}))
    dns_id = c.nodes["n1"].endpoints[DNS].identity  # type: ignore[attr-defined]
    proxied = {(k.protocol, k.port): v.proxy_port for k, v in _egress(c).items() if k.identity == dns_id}
    assert proxied == {(PROTO_UDP, 53): DNS_PROXY_PORT}  # the rule names UDP: TCP 53 is not allowed
    (policy,), fqdn = _dns_state(c)
    assert (policy.endpoint, policy.port, policy.last_port, policy.identity) == (A, 53, 53, dns_id)
    assert policy.names == ("*.stripe.com", "api.paypal.com")
    assert dict(fqdn.items()) == {"*.amazonaws.com": c.identities.get(("fqdn:*.amazonaws.com",)),  # type: ignore[attr-defined]
                                  "api.stripe.com": c.identities.get(("fqdn:api.stripe.com",))}  # type: ignore[attr-defined]
    assert c.nodes["n1"].config.proxy  # type: ignore[attr-defined]


def test_any_protocol_dns_rules_cover_udp_and_tcp_and_an_l4_allow_keeps_the_proxy_with_every_name() -> None:
    any_proto = {"toEndpoints": KUBE_DNS, "toPorts": [{"ports": [{"port": "53"}],
                                                       "rules": {"dns": [{"matchName": "api.stripe.com"}]}}]}
    plain = _dns()
    c = _compile(STRIPE, any_proto, plain)
    dns_id = c.nodes["n1"].endpoints[DNS].identity  # type: ignore[attr-defined]
    proxied = {(k.protocol, k.port): v.proxy_port for k, v in _egress(c).items() if k.identity == dns_id}
    # UDP is also allowed at L4 by the plain rule: DNS stays with the proxy, which learns the answers
    assert proxied == {(PROTO_UDP, 53): DNS_PROXY_PORT, (PROTO_TCP, 53): DNS_PROXY_PORT}
    names = sorted(p.names for p in _dns_state(c)[0])
    assert names == [("*",), ("api.stripe.com",)]  # the L4 rule wildcards the names on UDP
    assert any(w.code == "l7-ineffective" for w in c.warnings)  # type: ignore[attr-defined]


def test_a_node_without_dns_rules_has_no_selector_table() -> None:
    c = _compile(STRIPE)
    assert _dns_state(c) == (frozenset(), {})
    assert not c.nodes["n1"].config.proxy  # type: ignore[attr-defined]


def test_overlapping_selectors_get_a_set_identity_that_each_selectors_rules_allow() -> None:
    """api.stripe.com is selected by `matchName: api.stripe.com` (payment's policy) and by
    `matchPattern: *.stripe.com` (billing's): its IPs take the identity of the pair, which both
    pods' rules allow; a name only the pattern selects keeps the pattern's own identity."""
    b = IPv4Address("10.0.0.2")
    pods = (PodSpec("demo", "payment", {"app": "payment"}, "n1", (), A),
            PodSpec("demo", "billing", {"app": "billing"}, "n1", (), b),
            PodSpec("kube-system", "kube-dns", {"k8s-app": "kube-dns"}, "n1", (), DNS))

    def policy(name: str, fqdns: list[dict[str, str]]) -> object:
        egress = [{"toFQDNs": fqdns, "toPorts": [{"ports": [{"port": "443", "protocol": "TCP"}]}]},
                  _dns({"dns": [{"matchPattern": "*"}]})]
        return as_document({"kind": "CiliumNetworkPolicy", "metadata": {"name": name, "namespace": "demo"},
                            "spec": {"endpointSelector": {"matchLabels": {"app": name}}, "egress": egress}})

    docs = (policy("payment", [{"matchName": "api.stripe.com"}]),
            policy("billing", [{"matchPattern": "*.stripe.com"}, {"matchName": "api.paypal.com"}]))
    spec = ClusterSpec("t", ("n1",), {"demo": {}, "kube-system": {}}, pods, docs, "default")
    c = compile_spec(spec, IdentityTable(), EndpointTable(), "h")
    table = c.identities
    name, pattern = table.get(("fqdn:api.stripe.com",)), table.get(("fqdn:*.stripe.com",))
    pair = table.get(("fqdn:*.stripe.com", "fqdn:api.stripe.com"))
    assert name and pattern and pair and len({name, pattern, pair}) == 3
    assert table.get(("fqdn:api.paypal.com", "fqdn:api.stripe.com")) is None  # never the same name
    state = c.nodes["n1"]

    def allowed(ip: IPv4Address) -> set[int]:
        entries = state.policies[state.endpoints[ip].endpoint_id]
        return {k.identity for k in entries if k.direction == Direction.EGRESS and k.port == 443}

    assert {name, pair} <= allowed(A) and pattern not in allowed(A)
    assert {pattern, pair} <= allowed(b) and name not in allowed(b)
    assert state.fqdn["*.stripe.com,api.stripe.com"] == pair  # the proxy's table names the set
    assert c.catalog.identities[pair].labels == ("fqdn:*.stripe.com", "fqdn:api.stripe.com", "reserved:world")


def test_a_selector_inside_a_cidr_prefix_gets_an_identity_both_rules_allow() -> None:
    """toFQDNs api.stripe.com on 443 and toCIDR 203.0.113.0/24 on 80: an IP the selector learns
    inside the prefix takes an identity allowed on both ports (derived, node-local like CIDR
    identities), named in the node's fqdn table with the prefix."""
    cidr = {"toCIDR": ["203.0.113.0/24"], "toPorts": [{"ports": [{"port": "80", "protocol": "TCP"}]}]}
    c = _compile(STRIPE, cidr, _dns({"dns": [{"matchPattern": "*"}]}))
    state = c.nodes["n1"]  # type: ignore[attr-defined]
    stripe = c.identities.get(("fqdn:api.stripe.com",))  # type: ignore[attr-defined]
    prefix = next(e.identity for p, e in state.ipcache.items() if str(p) == "203.0.113.0/24")
    both = state.fqdn["api.stripe.com@203.0.113.0/24"]
    assert both not in (stripe, prefix) and "*.amazonaws.com@203.0.113.0/24" in state.fqdn
    ports = {(k.identity, k.port) for k in _egress(c)}
    assert {(stripe, 443), (prefix, 80), (both, 443), (both, 80)} <= ports
    assert (stripe, 80) not in ports and (prefix, 443) not in ports
    labels = c.catalog.identities[both].labels  # type: ignore[attr-defined]
    assert labels == ("fqdn:api.stripe.com", "cidr:203.0.113.0/24", "reserved:world")
    assert both not in {e.identity for e in state.ipcache.values()}  # until the proxy learns an IP
