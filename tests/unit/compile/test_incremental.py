"""Incremental compile: a compile given the previous result's memo equals a compile without it.

Random universes and policies come from the reference property test; random edits add, remove,
rewrite and stage policies, and now and then move or relabel a pod (a new universe), so both
the reuse and the invalidation paths run.
"""

from __future__ import annotations

import dataclasses
from ipaddress import IPv4Address
from typing import Any

from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from test_reference_property import (
    NAMESPACES,
    NODES,
    PORT_NAMES,
    PORTS,
    cilium_policy,
    k8s_policy,
    universes,
)

from meshctl.compile import EndpointTable, IdentityTable, compile_spec
from meshctl.compile.cluster import Compiled
from meshctl.compile.documents import as_document
from meshctl.compile.spec import ClusterSpec, PodSpec

AUDIT = {"policy.meshctl.io/mode": "audit"}


@st.composite
def a_policy(draw: st.DrawFn, i: int) -> dict[str, Any]:
    kind = draw(st.sampled_from(("np", "cnp", "ccnp")))
    doc = draw(k8s_policy(i)) if kind == "np" else draw(cilium_policy(i, kind == "ccnp"))
    if draw(st.integers(0, 4)) == 0:
        doc["metadata"]["annotations"] = dict(AUDIT)
    return doc  # type: ignore[no-any-return]


@st.composite
def edits(draw: st.DrawFn, spec: ClusterSpec) -> ClusterSpec:
    docs = [d.body for d in spec.policies]
    for step in range(draw(st.integers(1, 3))):
        op = draw(st.sampled_from(("add", "remove", "rewrite", "rewrite", "stage", "pod", "ports")))
        if op == "add" or not docs:
            docs.append(draw(a_policy(100 + step)))
        elif op == "remove":
            docs.pop(draw(st.integers(0, len(docs) - 1)))
        elif op == "rewrite":  # same kind, name and mode, new content: a policy edited in a PR
            at = draw(st.integers(0, len(docs) - 1))
            kind = docs[at]["kind"]
            fresh = draw(k8s_policy(at) if kind == "NetworkPolicy"
                         else cilium_policy(at, kind == "CiliumClusterwideNetworkPolicy"))
            docs[at] = {**fresh, "metadata": docs[at]["metadata"]}
        elif op == "stage":
            at = draw(st.integers(0, len(docs) - 1))
            meta = dict(docs[at]["metadata"])
            meta["annotations"] = {} if meta.get("annotations") else dict(AUDIT)
            docs[at] = {**docs[at], "metadata": meta}
        elif op == "ports" and spec.pods:  # named ports move: egress rules on them resolve anew
            pods = list(spec.pods)
            at = draw(st.integers(0, len(pods) - 1))
            pods[at] = dataclasses.replace(pods[at], ports=(
                (draw(st.sampled_from(PORT_NAMES)), draw(st.sampled_from(PORTS)), "TCP"),))
            spec = dataclasses.replace(spec, pods=tuple(pods))
        elif spec.pods:  # a pod moves node or gets another app label: the universe changes
            pods = list(spec.pods)
            at = draw(st.integers(0, len(pods) - 1))
            pods[at] = dataclasses.replace(
                pods[at], node=draw(st.sampled_from(NODES)),
                labels={**pods[at].labels, "app": draw(st.sampled_from(("web", "db", "new")))},
            )
            spec = dataclasses.replace(spec, pods=tuple(pods))
    return dataclasses.replace(spec, policies=tuple(as_document(d) for d in docs))


def _same(a: Compiled, b: Compiled) -> None:
    assert a.nodes.keys() == b.nodes.keys()
    for node in a.nodes:
        assert a.nodes[node] == b.nodes[node], node
        assert a.nodes[node].fingerprint() == b.nodes[node].fingerprint(), node
    assert a.catalog == b.catalog
    assert a.warnings == b.warnings
    assert (a.rules, a.isolations, a.staged_rules, a.staged_isolations) == (
        b.rules, b.isolations, b.staged_rules, b.staged_isolations)
    assert a.pod_identity == b.pod_identity and a.origins == b.origins


@settings(max_examples=250, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(st.data())
def test_incremental_compile_equals_full_compile_on_random_changes(data: st.DataObject) -> None:
    spec = data.draw(edits(data.draw(universes())[0]))  # staged policies from the start too
    first = compile_spec(spec, IdentityTable(), EndpointTable(), "prop")
    changed = data.draw(edits(spec))
    full = compile_spec(changed, first.identities, first.endpoint_ids, "prop")
    incremental = compile_spec(changed, first.identities, first.endpoint_ids, "prop", memo=first.memo)
    _same(incremental, full)
    again = compile_spec(changed, full.identities, full.endpoint_ids, "prop", memo=incremental.memo)
    _same(again, full)  # a memo made by an incremental compile serves the next one


def _universe(pods: int = 12) -> ClusterSpec:
    apps = ("web", "api", "db")
    pod_specs = tuple(
        PodSpec(NAMESPACES[i % 2], f"{apps[i % 3]}-{i}", {"app": apps[i % 3]}, NODES[i % 2], (),
                IPv4Address(f"10.0.0.{i + 1}"))
        for i in range(pods)
    )
    docs = tuple(
        as_document({
            "kind": "CiliumNetworkPolicy",
            "metadata": {"name": f"to-{app}", "namespace": ns},
            "spec": {"endpointSelector": {"matchLabels": {"app": app}},
                     "ingress": [{"fromEndpoints": [{}], "toPorts": [{"ports": [{"port": "80"}]}]}]},
        })
        for ns in NAMESPACES[:2] for app in apps
    )
    return ClusterSpec("inc", NODES, {n: {} for n in NAMESPACES[:2]}, pod_specs, docs)


def test_only_the_endpoints_a_change_selects_get_new_maps() -> None:
    spec = _universe()
    first = compile_spec(spec, IdentityTable(), EndpointTable(), "b")
    same = compile_spec(spec, first.identities, first.endpoint_ids, "b", memo=first.memo)
    assert sum(len(state.policies) for state in same.nodes.values()) == 12
    for node, state in same.nodes.items():
        assert all(m is first.nodes[node].policies[ep] for ep, m in state.policies.items())
    port_81 = [{"fromEndpoints": [{}], "toPorts": [{"ports": [{"port": "81"}]}]}]
    body = spec.policies[0].body
    edited = as_document({**body, "spec": {**body["spec"], "ingress": port_81}})
    changed = dataclasses.replace(spec, policies=(edited, *spec.policies[1:]))
    inc = compile_spec(changed, first.identities, first.endpoint_ids, "b", memo=first.memo)
    rebuilt = {
        inc.catalog.endpoints[node][ep]
        for node, state in inc.nodes.items()
        for ep, m in state.policies.items()
        if m is not first.nodes[node].policies.get(ep)
    }
    target = spec.policies[0]
    assert rebuilt == {p.key for p in spec.pods
                       if p.namespace == target.namespace and p.labels["app"] == "web"}
    _same(inc, compile_spec(changed, first.identities, first.endpoint_ids, "b"))


def _cnp(name: str, app: str, section: str, peers: dict[str, Any], port: str, staged: bool = False) -> Any:
    meta: dict[str, Any] = {"name": name, "namespace": "alpha"}
    if staged:
        meta["annotations"] = dict(AUDIT)
    return as_document({"kind": "CiliumNetworkPolicy", "metadata": meta, "spec": {
        "endpointSelector": {"matchLabels": {"app": app}},
        section: [{**peers, "toPorts": [{"ports": [{"port": port}]}]}],
    }})


def _pair(web_ports: tuple[Any, ...] = ()) -> ClusterSpec:
    pods = (
        PodSpec("alpha", "web-0", {"app": "web"}, "n1", web_ports, IPv4Address("10.0.0.1")),
        PodSpec("alpha", "db-0", {"app": "db"}, "n2", (), IPv4Address("10.0.0.2")),
    )
    return ClusterSpec("inc", NODES, {"alpha": {}}, pods, ())


def test_a_staged_policy_edited_in_place_rebuilds_the_audit_map() -> None:
    base = dataclasses.replace(_pair(), policies=(
        _cnp("db-in", "db", "ingress", {"fromEndpoints": [{}]}, "5432"),
        _cnp("db-lock", "db", "ingress", {"fromEndpoints": [{"matchLabels": {"app": "web"}}]}, "5432", True),
    ))
    first = compile_spec(base, IdentityTable(), EndpointTable(), "b")
    # same sections and origins, only the port differs: the rule's content is all that moved
    moved = dataclasses.replace(base, policies=(
        base.policies[0],
        _cnp("db-lock", "db", "ingress", {"fromEndpoints": [{"matchLabels": {"app": "web"}}]}, "5433", True),
    ))
    _same(compile_spec(moved, first.identities, first.endpoint_ids, "b", memo=first.memo),
          compile_spec(moved, first.identities, first.endpoint_ids, "b"))


def test_a_named_port_that_moves_is_resolved_again_for_its_peers() -> None:
    to_http = _cnp("db-out", "db", "egress", {"toEndpoints": [{"matchLabels": {"app": "web"}}]}, "http")
    before = dataclasses.replace(_pair((("http", 80, "TCP"),)), policies=(to_http,))
    first = compile_spec(before, IdentityTable(), EndpointTable(), "b")
    after = dataclasses.replace(_pair((("http", 8080, "TCP"),)), policies=(to_http,))
    inc = compile_spec(after, first.identities, first.endpoint_ids, "b", memo=first.memo)
    _same(inc, compile_spec(after, first.identities, first.endpoint_ids, "b"))
    db = inc.catalog.endpoints["n2"]
    (ep,) = (e for e, pod in db.items() if pod == "alpha/db-0")
    assert {k.port for k in inc.nodes["n2"].policies[ep] if k.identity != 0} >= {8080}
