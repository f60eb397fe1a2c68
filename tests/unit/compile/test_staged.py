"""Staged policies in the compiler: enforced maps untouched, one audit map per audited endpoint."""

from __future__ import annotations

from ipaddress import IPv4Address

from meshctl.compile import EndpointTable, IdentityTable, compile_spec
from meshctl.compile.cluster import Compiled
from meshctl.compile.documents import as_document
from meshctl.compile.spec import ClusterSpec, PodSpec
from meshctl.model.staging import MODE_ANNOTATION
from meshctl.nodestate import PROTO_TCP, Direction, audit_map_id, is_audit_map
from meshctl.verdicts import audit_event, connection_verdict, ipcache_lookup, policy_verdict, staged_verdict

CACHE, BACKEND, DB = IPv4Address("10.0.0.1"), IPv4Address("10.0.0.2"), IPv4Address("10.0.0.3")


def _db_policy(mode: str | None = None, namespace: str = "prod") -> dict:
    meta: dict = {"name": "database-security", "namespace": namespace}
    if mode:
        meta["annotations"] = {MODE_ANNOTATION: mode}
    return {"kind": "CiliumNetworkPolicy", "metadata": meta, "spec": {
        "endpointSelector": {"matchLabels": {"app": "postgres"}},
        "ingress": [{"fromEndpoints": [{"matchLabels": {"app": "backend"}}],
                     "toPorts": [{"ports": [{"port": "5432", "protocol": "TCP"}]}]}]}}


def _compile(*docs: dict, audit_namespaces: tuple[str, ...] = ()) -> Compiled:
    pods = (
        PodSpec("prod", "cache", {"app": "cache"}, "n1", (), CACHE),
        PodSpec("prod", "backend", {"app": "backend"}, "n1", (), BACKEND),
        PodSpec("prod", "postgres", {"app": "postgres"}, "n2", (), DB),
    )
    spec = ClusterSpec("t", ("n1", "n2"), {"prod": {}}, pods,
                       tuple(as_document(d, None, audit_namespaces) for d in docs))
    return compile_spec(spec, IdentityTable(), EndpointTable(), "h")


def _staged(c: Compiled, src: IPv4Address, port: int = 5432):
    n2 = c.nodes["n2"]
    peer = ipcache_lookup(n2.ipcache, src)
    return staged_verdict(n2, DB, Direction.INGRESS, peer, PROTO_TCP, port)


def test_staged_policy_changes_no_enforced_verdict_and_gets_an_audit_map() -> None:
    staged = _compile(_db_policy("audit"))
    plain = _compile()
    # the enforced view is the cluster without the policy, entry for entry
    for node in ("n1", "n2"):
        enforced = {k: v for k, v in staged.nodes[node].policies.items() if not is_audit_map(k)}
        assert enforced == dict(plain.nodes[node].policies)
    ep = staged.nodes["n2"].endpoints[DB]
    assert (ep.enforce_ingress, ep.audit_ingress, ep.audit_egress) == (False, True, False)
    assert audit_map_id(ep.endpoint_id) in staged.nodes["n2"].policies
    assert not any(is_audit_map(k) for k in staged.nodes["n1"].policies)  # cache, backend pay nothing
    assert connection_verdict(staged.nodes, CACHE, DB, PROTO_TCP, 5432).allowed
    would = _staged(staged, CACHE)
    assert would is not None and (would.allowed, would.reason) == (False, "default-deny")
    enforced = policy_verdict(staged.nodes["n2"], DB, Direction.INGRESS, 0, PROTO_TCP, 5432)
    assert audit_event(enforced, would) == would
    backend = _staged(staged, BACKEND)
    assert backend is not None and backend.allowed  # same verdict both ways: no AUDIT event
    title = "CiliumNetworkPolicy prod/database-security"
    assert staged.catalog.staged["prod/postgres"] == {Direction.INGRESS: (title,)}
    assert staged.catalog.staged_isolation["prod/postgres"][Direction.INGRESS] == (
        "CiliumNetworkPolicy prod/database-security",)
    assert list(staged.staged_digests) == ["CiliumNetworkPolicy prod/database-security"]
    assert staged.catalog.isolation == plain.catalog.isolation


def test_enforcing_the_staged_policy_equals_its_audit_map() -> None:
    staged, enforced = _compile(_db_policy("audit")), _compile(_db_policy())
    ep = staged.nodes["n2"].endpoints[DB]
    audit_map = staged.nodes["n2"].policies[audit_map_id(ep.endpoint_id)]
    assert audit_map == enforced.nodes["n2"].policies[ep.endpoint_id]
    assert not connection_verdict(enforced.nodes, CACHE, DB, PROTO_TCP, 5432).allowed
    assert enforced.staged_digests == {} and not enforced.catalog.staged


def test_audit_namespaces_stage_a_namespace_and_the_annotation_can_enforce_one() -> None:
    by_namespace = _compile(_db_policy(), audit_namespaces=("prod",))
    assert by_namespace.nodes["n2"].endpoints[DB].audit_ingress
    assert connection_verdict(by_namespace.nodes, CACHE, DB, PROTO_TCP, 5432).allowed
    opted_out = _compile(_db_policy("enforce"), audit_namespaces=("prod",))
    assert not opted_out.nodes["n2"].endpoints[DB].audit_ingress
    assert not connection_verdict(opted_out.nodes, CACHE, DB, PROTO_TCP, 5432).allowed
    other = _compile(_db_policy(), audit_namespaces=("staging",))
    assert other.staged_digests == {}


def test_a_staged_policy_on_an_enforced_endpoint_audits_its_extra_deny() -> None:
    deny_cache = {"kind": "CiliumNetworkPolicy",
                  "metadata": {"name": "no-cache", "namespace": "prod",
                               "annotations": {MODE_ANNOTATION: "audit"}},
                  "spec": {"endpointSelector": {"matchLabels": {"app": "postgres"}},
                           "ingressDeny": [{"fromEndpoints": [{"matchLabels": {"app": "cache"}}]}]}}
    c = _compile(_db_policy(), deny_cache)
    ep = c.nodes["n2"].endpoints[DB]
    assert (ep.enforce_ingress, ep.audit_ingress) == (True, True)
    would = _staged(c, CACHE)
    assert would is not None and would.reason == "explicit-deny"
    assert c.origins[would.cookie].name == "no-cache"
    # cache is already dropped by the enforced policy: both drop, so no AUDIT event
    peer = ipcache_lookup(c.nodes["n2"].ipcache, CACHE)
    enforced = policy_verdict(c.nodes["n2"], DB, Direction.INGRESS, peer, PROTO_TCP, 5432)
    assert not enforced.allowed and audit_event(enforced, would) is None


def test_documents_read_the_mode_from_their_metadata() -> None:
    assert as_document(_db_policy("audit")).staged
    assert not as_document(_db_policy()).staged
    assert as_document(_db_policy(), None, ("prod",)).staged
    ccnp = as_document({"kind": "CiliumClusterwideNetworkPolicy", "metadata": {"name": "x"},
                        "spec": {"endpointSelector": {}}}, None, ("prod", ""))
    assert not ccnp.staged  # a clusterwide policy has no namespace: only its annotation stages it
