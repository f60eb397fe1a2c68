"""Property: the compiled entries, looked up as the datapath does, agree with the reference.

Random small universes (namespaces with labels, pods with labels, nodes and named ports) and
random policies of all three kinds (selectors with matchExpressions, endpoints, entities, CIDRs
with exceptions, ports with ranges and names, deny sections, enableDefaultDeny, enforcement
modes); every query's meshctl.verdicts.connection_verdict must equal reference.verdict.
"""

from __future__ import annotations

from ipaddress import IPv4Address
from typing import Any

from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from meshctl.compile import EndpointTable, IdentityTable, compile_spec
from meshctl.compile.documents import as_document
from meshctl.compile.reference import Reference
from meshctl.compile.spec import ClusterSpec, PodSpec
from meshctl.nodestate import PROTO_ICMP, PROTO_SCTP, PROTO_TCP, PROTO_UDP, Direction
from meshctl.verdicts import connection_verdict

NAMESPACES = ("alpha", "beta", "gamma")
NODES = ("n1", "n2")
APPS = ("web", "db", "api")
PORTS = (53, 80, 81, 443, 1000, 1023, 1024, 8080, 9090)
EXTERNAL = tuple(
    IPv4Address(a) for a in ("192.168.1.5", "192.168.2.7", "8.8.8.8", "8.8.4.4", "172.16.0.1", "10.9.9.9")
)
CIDRS = ("192.168.0.0/16", "192.168.1.0/24", "192.168.1.5/32", "0.0.0.0/0", "8.8.0.0/16", "10.0.0.0/8")
EXCEPTS = ("192.168.1.0/24", "192.168.2.0/24", "8.8.8.0/24", "10.0.0.0/24", "192.168.1.5/32")
PORT_NAMES = ("http", "dns", "metrics")
PROTOS = {"TCP": PROTO_TCP, "UDP": PROTO_UDP, "SCTP": PROTO_SCTP}

# --- universes ----------------------------------------------------------------------------

label_values = st.one_of(st.none(), st.sampled_from(("x", "y")))


@st.composite
def ns_labels(draw: st.DrawFn) -> dict[str, str]:
    out = {}
    for key in ("team", "env"):
        v = draw(label_values)
        if v is not None:
            out[key] = v
    return out


@st.composite
def pods(draw: st.DrawFn, namespaces: tuple[str, ...]) -> tuple[PodSpec, ...]:
    out = []
    for i in range(draw(st.integers(1, 6))):
        labels = {}
        app = draw(st.one_of(st.none(), st.sampled_from(APPS)))
        if app:
            labels["app"] = app
        tier = draw(label_values)
        if tier:
            labels["tier"] = tier
        if draw(st.booleans()):
            labels["pod-template-hash"] = f"h{i}"  # not identity-relevant
        names = draw(st.lists(st.sampled_from(PORT_NAMES), unique=True, max_size=2))
        ports = tuple(
            (n, draw(st.sampled_from(PORTS)), draw(st.sampled_from(("TCP", "UDP")))) for n in names
        )
        out.append(
            PodSpec(
                draw(st.sampled_from(namespaces)),
                f"p{i}",
                labels,
                draw(st.sampled_from(NODES)),
                ports,
                IPv4Address(f"10.0.0.{i + 1}"),
            )
        )
    return tuple(out)


@st.composite
def label_selector(draw: st.DrawFn, peer: bool = False) -> dict[str, Any]:
    sel: dict[str, Any] = {}
    match: dict[str, str] = {}
    if draw(st.booleans()):
        key = draw(st.sampled_from(("app", "k8s:app", "any:app")))
        match[key] = draw(st.sampled_from(APPS))
    if draw(st.integers(0, 3)) == 0:
        match["tier"] = draw(st.sampled_from(("x", "y")))
    if peer:
        extra = draw(st.integers(0, 7))
        if extra == 0:
            match["k8s:io.kubernetes.pod.namespace"] = draw(st.sampled_from(NAMESPACES))
        elif extra == 1:
            match["io.cilium.k8s.namespace.labels.team"] = draw(st.sampled_from(("x", "y")))
        elif extra == 2:
            match = {"reserved:world": ""}
    if match:
        sel["matchLabels"] = match
    if draw(st.integers(0, 2)) == 0:
        op = draw(st.sampled_from(("In", "NotIn", "Exists", "DoesNotExist")))
        expr: dict[str, Any] = {"key": draw(st.sampled_from(("app", "tier"))), "operator": op}
        if op in ("In", "NotIn"):
            expr["values"] = draw(st.lists(st.sampled_from((*APPS, "x", "y")), min_size=1, max_size=2))
        sel["matchExpressions"] = [expr]
    return sel


@st.composite
def k8s_port(draw: st.DrawFn) -> dict[str, Any]:
    out: dict[str, Any] = {}
    proto = draw(st.sampled_from((None, "TCP", "UDP", "SCTP")))
    if proto:
        out["protocol"] = proto
    choice = draw(st.integers(0, 3))
    if choice == 1:
        out["port"] = draw(st.sampled_from(PORTS))
    elif choice == 2:
        first, last = sorted(draw(st.lists(st.sampled_from(PORTS), min_size=2, max_size=2)))
        out["port"], out["endPort"] = first, last
    elif choice == 3:
        out["port"] = draw(st.sampled_from(PORT_NAMES))
    return out


@st.composite
def cilium_port(draw: st.DrawFn) -> dict[str, Any]:
    out: dict[str, Any] = {}
    choice = draw(st.integers(0, 3))
    proto = draw(st.sampled_from((None, "ANY", "TCP", "UDP")))
    if choice == 3:  # named ports with an explicit protocol
        proto = draw(st.sampled_from(("TCP", "UDP")))
        out["port"] = draw(st.sampled_from(PORT_NAMES))
    elif choice == 1:
        out["port"] = str(draw(st.sampled_from(PORTS)))
    elif choice == 2:
        first, last = sorted(draw(st.lists(st.sampled_from(PORTS), min_size=2, max_size=2)))
        out["port"], out["endPort"] = str(first), last
    if proto:
        out["protocol"] = proto
    return out


@st.composite
def cidr_set(draw: st.DrawFn) -> dict[str, Any]:
    out: dict[str, Any] = {"cidr": draw(st.sampled_from(CIDRS))}
    excepts = draw(st.lists(st.sampled_from(EXCEPTS), max_size=2, unique=True))
    if excepts:
        out["except"] = excepts
    return out


@st.composite
def k8s_peer(draw: st.DrawFn) -> dict[str, Any]:
    kind = draw(st.integers(0, 3))
    if kind == 0:
        block = draw(cidr_set())
        return {"ipBlock": block}
    out: dict[str, Any] = {}
    if kind in (1, 3):
        out["podSelector"] = draw(label_selector())
    if kind in (2, 3):
        ns_sel: dict[str, Any] = {}
        if draw(st.booleans()):
            key = draw(st.sampled_from(("team", "env", "kubernetes.io/metadata.name")))
            ns_sel["matchLabels"] = {
                key: draw(st.sampled_from(NAMESPACES if key.startswith("kube") else ("x", "y")))
            }
        elif draw(st.booleans()):
            ns_sel["matchExpressions"] = [
                {"key": "team", "operator": draw(st.sampled_from(("NotIn", "DoesNotExist"))), "values": ["x"]}
            ]
            if ns_sel["matchExpressions"][0]["operator"] == "DoesNotExist":
                del ns_sel["matchExpressions"][0]["values"]
        out["namespaceSelector"] = ns_sel
    return out


@st.composite
def k8s_policy(draw: st.DrawFn, i: int) -> dict[str, Any]:
    spec: dict[str, Any] = {"podSelector": draw(label_selector())}
    for section, peer_key in (("ingress", "from"), ("egress", "to")):
        if draw(st.booleans()):
            rules = []
            for _ in range(draw(st.integers(0, 2))):
                rule: dict[str, Any] = {}
                if draw(st.integers(0, 3)):
                    rule[peer_key] = draw(st.lists(k8s_peer(), min_size=1, max_size=2))
                if draw(st.booleans()):
                    rule["ports"] = draw(st.lists(k8s_port(), min_size=1, max_size=2))
                rules.append(rule)
            spec[section] = rules
    types = draw(st.sampled_from((None, ["Ingress"], ["Egress"], ["Ingress", "Egress"])))
    if types is not None:
        spec["policyTypes"] = types
    ns = draw(st.sampled_from(NAMESPACES))
    return {"kind": "NetworkPolicy", "metadata": {"name": f"np{i}", "namespace": ns}, "spec": spec}


@st.composite
def cilium_rule(draw: st.DrawFn, direction: Direction, deny: bool) -> dict[str, Any]:
    pre = "from" if direction == Direction.INGRESS else "to"
    rule: dict[str, Any] = {}
    for kind in draw(st.lists(st.integers(0, 3), max_size=2, unique=True)):
        if kind == 0:
            rule[pre + "Endpoints"] = draw(st.lists(label_selector(peer=True), min_size=1, max_size=2))
        elif kind == 1:
            rule[pre + "Entities"] = draw(
                st.lists(st.sampled_from(("world", "cluster", "all", "host", "none")), min_size=1, max_size=2)
            )
        elif kind == 2:
            rule[pre + "CIDR"] = draw(st.lists(st.sampled_from(CIDRS), min_size=1, max_size=2))
        else:
            rule[pre + "CIDRSet"] = draw(st.lists(cidr_set(), min_size=1, max_size=2))
    if draw(st.booleans()):
        rule["toPorts"] = [{"ports": draw(st.lists(cilium_port(), min_size=1, max_size=2))}]
        if not deny and draw(st.integers(0, 3)) == 0:  # L7 rides on the port: allowed at L4
            rule["toPorts"][0]["rules"] = {"http": [{"method": "GET"}]}  # Cilium: TCP (or ANY) only
            rule["toPorts"][0]["ports"] = [{**p, "protocol": draw(st.sampled_from(("TCP", "ANY")))}
                                           for p in rule["toPorts"][0]["ports"]]
    return rule


@st.composite
def cilium_policy(draw: st.DrawFn, i: int, clusterwide: bool) -> dict[str, Any]:
    meta: dict[str, Any] = {"name": f"cnp{i}"}
    if not clusterwide:
        meta["namespace"] = draw(st.sampled_from(NAMESPACES))
    kind = "CiliumClusterwideNetworkPolicy" if clusterwide else "CiliumNetworkPolicy"
    if draw(st.integers(0, 3)) == 0:  # several rules in one document
        specs = [draw(cilium_spec()) for _ in range(draw(st.integers(1, 2)))]
        return {"kind": kind, "metadata": meta, "specs": specs}
    return {"kind": kind, "metadata": meta, "spec": draw(cilium_spec())}


@st.composite
def cilium_spec(draw: st.DrawFn) -> dict[str, Any]:
    spec: dict[str, Any] = {"endpointSelector": draw(label_selector())}
    for direction in (Direction.INGRESS, Direction.EGRESS):
        for deny in (False, True):
            if draw(st.integers(0, 2)) == 0:
                continue
            key = direction.label + ("Deny" if deny else "")
            spec[key] = [
                draw(cilium_rule(direction, deny)) for _ in range(draw(st.sampled_from((0, 1, 1, 2))))
            ]
    if draw(st.integers(0, 4)) == 0:
        spec["enableDefaultDeny"] = {
            "ingress": draw(st.booleans()),
            "egress": draw(st.booleans()),
        }
    return spec


@st.composite
def universes(draw: st.DrawFn) -> tuple[ClusterSpec, list[tuple[Any, Any, int, int]]]:
    namespaces = tuple(NAMESPACES[: draw(st.integers(1, 3))])
    ns_table = {n: draw(ns_labels()) for n in namespaces}
    pod_specs = draw(pods(namespaces))
    docs = []
    for i in range(draw(st.integers(1, 5))):
        kind = draw(st.sampled_from(("np", "cnp", "ccnp")))
        if kind == "np":
            docs.append(draw(k8s_policy(i)))
        else:
            docs.append(draw(cilium_policy(i, kind == "ccnp")))
    mode = draw(st.sampled_from(("default", "default", "default", "always", "never")))
    spec = ClusterSpec("prop", NODES, ns_table, pod_specs, tuple(as_document(d) for d in docs), mode)
    ends = [p.key for p in pod_specs] + list(EXTERNAL)
    queries = []
    for _ in range(draw(st.integers(1, 20))):
        src, dst = draw(st.sampled_from(ends)), draw(st.sampled_from(ends))
        proto = draw(st.sampled_from((PROTO_TCP, PROTO_TCP, PROTO_UDP, PROTO_SCTP, PROTO_ICMP)))
        port = 0 if proto == PROTO_ICMP else draw(st.sampled_from(PORTS))
        queries.append((src, dst, port, proto))
    return spec, queries


# --- the property -------------------------------------------------------------------------


@settings(max_examples=150, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(universes())
def test_compiled_entries_agree_with_reference(universe: tuple[ClusterSpec, list[Any]]) -> None:
    spec, queries = universe
    compiled = compile_spec(spec, IdentityTable(), EndpointTable(), "prop")
    ref = Reference(spec)
    ip = {p.key: p.ip for p in spec.pods}
    for src, dst, port, proto in queries:
        got = connection_verdict(compiled.nodes, ip.get(src, src), ip.get(dst, dst), proto, port)
        want = ref.verdict(src, dst, port, proto)
        assert got.allowed == want, (
            f"{src} -> {dst} {port}/{proto}: compiled {got}, reference {want}\n"
            f"mode={spec.mode}\n" + "\n".join(repr(d.body) for d in spec.policies)
        )
