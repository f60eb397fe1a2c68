"""Incremental plan == full plan: replan from a baseline gives the plan a full compile gives.

Random universes and policies come from the reference property test; the policies are YAML
files of a repo, read by the loader. A full compile of the first repo is the live state (the
baseline's converged nodes). Random edits rewrite, add and remove policy files; the full plan
compiles the edited repo and diffs it against the live nodes, the incremental plan replans from
the stored baseline (marshal round trip) and reads only the maps it names from the live nodes.
The two plans must be equal: changes, fingerprints, digests, rules and warnings.
"""

from __future__ import annotations

import marshal
from dataclasses import replace
from datetime import UTC, datetime
from ipaddress import IPv4Address
from typing import Any

import yaml
from hypothesis import HealthCheck, assume, event, given, settings
from hypothesis import strategies as st
from test_reference_property import cilium_policy, k8s_policy, universes

from meshctl.app.increment.baseline import Stamps, record
from meshctl.app.increment.replan import documents, replan, with_live
from meshctl.compile import EndpointTable, IdentityTable, compile_spec
from meshctl.compile.spec import ClusterSpec, PodSpec
from meshctl.errors import SourceError
from meshctl.nodestate import FrozenMap, NodeState
from meshctl.plan import build_plan
from meshctl.plan.model import Plan

BUILD = "sha256:prop"
WHEN = datetime(2026, 12, 4, tzinfo=UTC)
API = {"NetworkPolicy": "networking.k8s.io/v1"}


def _text(doc: dict[str, Any]) -> str:
    return yaml.safe_dump({"apiVersion": API.get(doc["kind"], "cilium.io/v2"), **doc}, sort_keys=False)


def _loads(text: str) -> bool:
    try:
        documents("p.yaml", text)
    except SourceError:
        return False
    return True


@st.composite
def a_policy(draw: st.DrawFn, i: int) -> dict[str, Any]:
    """A policy the loader takes (the generators also make label keys only Cilium's API allows)."""
    for _ in range(10):  # a third of the drafts break a loader rule: draw again, not filter
        kind = draw(st.sampled_from(("np", "cnp", "ccnp")))
        doc = draw(k8s_policy(i)) if kind == "np" else draw(cilium_policy(i, kind == "ccnp"))
        if _loads(_text(doc)):
            return doc  # type: ignore[no-any-return]
    assume(False)
    raise AssertionError("unreachable")


def _spec(universe: ClusterSpec, files: dict[str, str]) -> ClusterSpec:
    docs = [d for rel in sorted(files) for d in documents(rel, files[rel]) or ()]
    return ClusterSpec(universe.cluster, universe.nodes, universe.namespaces, universe.pods, tuple(docs),
                       universe.mode, universe.ipv6_pass)


def _titles(files: dict[str, str]) -> dict[str, list[str]]:
    return {rel: [d.title for d in documents(rel, text) or ()] for rel, text in files.items()}


def _plan(observed: dict[str, NodeState], intended: dict[str, NodeState], catalog: Any,
          warnings: Any) -> Plan:
    return build_plan(observed, intended, catalog, compiled_warnings=warnings, impact=False, created_at=WHEN)


def _baseline(first: Any, files: dict[str, str], mixed: tuple[str, ...] = ()) -> dict[str, Any]:
    """The baseline as stored (marshal round trip) of nodes that hold `first`."""
    made = record(first, Stamps(BUILD, None, None, 0), {}, _titles(files), mixed)
    return marshal.loads(marshal.dumps(made))  # type: ignore[no-any-return]


@settings(max_examples=200, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(st.data())
def test_incremental_plan_equals_full_plan_on_random_edits(data: st.DataObject) -> None:
    universe = data.draw(universes())[0]
    count = data.draw(st.integers(1, 5))
    files = {f"policies/p{i}.yaml": _text(data.draw(a_policy(i))) for i in range(count)}
    first = compile_spec(_spec(universe, files), IdentityTable(), EndpointTable(), BUILD)
    base = _baseline(first, files)

    edits: dict[str, str | None] = {}
    for step in range(data.draw(st.integers(1, 3))):
        op = data.draw(st.sampled_from(("rewrite", "rewrite", "add", "remove", "two")))
        names = sorted(rel for rel in files if rel not in edits)
        if op == "add" or not names:
            rel, text = f"policies/new{step}.yaml", _text(data.draw(a_policy(100 + step)))
        else:
            rel = data.draw(st.sampled_from(names))
            if op == "remove":
                text = None
            elif op == "two":  # one file, two documents
                text = "---\n".join(_text(data.draw(a_policy(k + step))) for k in (200, 300))
            else:
                text = _text(data.draw(a_policy(int(rel.removeprefix("policies/p").removesuffix(".yaml")))))
        edits[rel] = text
    after = {rel: t for rel, t in {**files, **edits}.items() if t is not None}
    full_spec = _spec(universe, after)
    titles = [d.title for d in full_spec.policies]
    if len(set(titles)) != len(titles):
        event("duplicate policy names: the loader refuses")
        return
    full = compile_spec(full_spec, first.identities, first.endpoint_ids, BUILD)
    got = replan(base, edits, after.get)
    if got is None:
        event("planned in full")
        return
    event("planned incrementally")

    live = dict(first.nodes)  # the nodes hold the first compile, but for a touched map now and then
    drifted = [(n, ep) for n, touched in got.touched.items() for ep in touched if ep in live[n].policies]
    if drifted and data.draw(st.booleans()):
        node, ep = data.draw(st.sampled_from(drifted))
        live[node] = replace(live[node], policies=FrozenMap({**live[node].policies, ep: FrozenMap()}))
        event("a touched map drifted")
    want = _plan(live, full.nodes, full.catalog, full.warnings)

    observed = {}
    for n, touched in got.touched.items():
        eps = {ip: live[n].endpoints[ip] for ip, _ in touched.values() if ip in live[n].endpoints}
        maps = {ep: live[n].policies[ep] for ep in touched if ep in live[n].policies}
        observed[n] = with_live(got.baseline[n], touched, eps, maps)
    assert _plan(observed, got.intended, got.catalog, got.warnings) == want
    for node, state in got.intended.items():
        assert state.fingerprint() == full.nodes[node].fingerprint()


def _repo(egress: str = "toCIDR: [192.168.0.0/16]") -> tuple[ClusterSpec, dict[str, str]]:
    pods = tuple(PodSpec("alpha", f"web-{i}", {"app": "web"}, "n1", (), IPv4Address(f"10.0.0.{i + 1}"))
                 for i in range(3))
    universe = ClusterSpec("prop", ("n1",), {"alpha": {}}, pods, ())
    policy = {"kind": "CiliumNetworkPolicy", "metadata": {"name": "web", "namespace": "alpha"},
              "spec": {"endpointSelector": {"matchLabels": {"app": "web"}},
                       "egress": [yaml.safe_load(egress)]}}
    return universe, {"policies/web.yaml": _text(policy)}


def test_an_edit_the_baseline_cannot_answer_plans_in_full() -> None:
    universe, files = _repo()
    first = compile_spec(_spec(universe, files), IdentityTable(), EndpointTable(), BUILD)
    base = _baseline(first, files, mixed=("inventory.yaml",))
    same = files["policies/web.yaml"]
    assert replan(base, {"policies/web.yaml": same}, files.get) is not None
    assert replan(base, {"inventory.yaml": "kind: Pod\n"}, files.get) is None  # pods: a new universe
    new_cidr = same.replace("192.168.0.0/16", "10.9.0.0/16")
    assert replan(base, {"policies/web.yaml": new_cidr}, files.get) is None  # a new CIDR identity
    audit = "namespace: alpha\n  annotations: {policy.meshctl.io/mode: audit}"
    staged = same.replace("namespace: alpha", audit)
    assert staged != same and replan(base, {"policies/web.yaml": staged}, files.get) is None


def test_to_fqdns_plans_in_full_added_or_already_there() -> None:
    """World takes in every toFQDNs identity: one policy's selectors shape other policies' entries."""
    universe, files = _repo("toEntities: [world]")
    first = compile_spec(_spec(universe, files), IdentityTable(), EndpointTable(), BUILD)
    same = files["policies/web.yaml"]
    fqdn = same.replace("toEntities:\n    - world", "toFQDNs:\n    - matchName: api.stripe.com")
    assert fqdn != same and replan(_baseline(first, files), {"policies/web.yaml": fqdn}, files.get) is None
    with_fqdn = {"policies/web.yaml": fqdn}
    second = compile_spec(_spec(universe, with_fqdn), first.identities, first.endpoint_ids, BUILD)
    assert replan(_baseline(second, with_fqdn), {"policies/web.yaml": same}, with_fqdn.get) is None


def test_an_edit_reads_only_the_endpoints_it_selects() -> None:
    universe, files = _repo("toEntities: [world]")
    other = dict(universe.pods[0].__dict__, name="db-0", labels={"app": "db"}, ip=IPv4Address("10.0.0.9"))
    universe = replace(universe, pods=(*universe.pods, PodSpec(**other)))
    first = compile_spec(_spec(universe, files), IdentityTable(), EndpointTable(), BUILD)
    got = replan(_baseline(first, files), {"policies/web.yaml": None}, files.get)
    assert got is not None
    web = {first.catalog.endpoints["n1"][ep] for ep in got.touched["n1"]}
    assert web == {"alpha/web-0", "alpha/web-1", "alpha/web-2"}
