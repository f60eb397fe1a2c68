"""Compiler semantics checked through the datapath's lookup (meshctl.verdicts)."""

from __future__ import annotations

import json
from ipaddress import IPv4Address
from pathlib import Path

import pytest
from typer.testing import CliRunner

from meshctl.compile import EndpointTable, IdentityTable, compile_spec
from meshctl.compile.documents import as_document
from meshctl.compile.identities import cidr_identities
from meshctl.compile.labels import pod_identity_labels
from meshctl.compile.ports import range_to_prefixes
from meshctl.compile.spec import ClusterSpec, PodSpec
from meshctl.nodestate import PROTO_TCP, PROTO_UDP
from meshctl.verdicts import connection_verdict

REPO = Path(__file__).resolve().parents[3]
A, B, C = IPv4Address("10.0.0.1"), IPv4Address("10.0.0.2"), IPv4Address("10.0.1.3")
WORLD = IPv4Address("8.8.8.8")


def _spec(*policies: dict, mode: str = "default") -> ClusterSpec:
    pods = (
        PodSpec("demo", "a", {"app": "a"}, "n1", (("http", 8080, "TCP"),), A),
        PodSpec("demo", "b", {"app": "b"}, "n1", (("http", 9090, "TCP"),), B),
        PodSpec("other", "c", {"app": "c"}, "n2", (), C),
    )
    docs = tuple(as_document(p) for p in policies)
    return ClusterSpec("t", ("n1", "n2"), {"demo": {}, "other": {}}, pods, docs, mode)


def _cnp(name: str, spec: dict, ns: str = "demo") -> dict:
    return {"kind": "CiliumNetworkPolicy", "metadata": {"name": name, "namespace": ns}, "spec": spec}


def _allowed(
    spec: ClusterSpec, src: IPv4Address, dst: IPv4Address, port: int, proto: int = PROTO_TCP
) -> bool:
    c = compile_spec(spec, IdentityTable(), EndpointTable(), "h")
    return connection_verdict(c.nodes, src, dst, proto, port).allowed


def test_port_ranges_become_minimal_prefixes() -> None:
    assert range_to_prefixes(80, 90) == [(80, 13), (88, 15), (90, 16)]
    assert range_to_prefixes(0, 65535) == [(0, 0)]
    assert len(range_to_prefixes(1, 65535)) == 16


def test_identity_labels_drop_hash_labels_and_keep_namespace() -> None:
    labels = pod_identity_labels("demo", {"app": "a", "pod-template-hash": "x1"}, {"team": "t"}, "c1")
    assert "k8s:app=a" in labels and "k8s:io.kubernetes.pod.namespace=demo" in labels
    assert "k8s:io.cilium.k8s.namespace.labels.team=t" in labels
    assert not any("pod-template-hash" in lb for lb in labels)


def test_identity_table_is_stable_and_never_reuses() -> None:
    t1 = IdentityTable().allocate([("k8s:app=a",), ("k8s:app=b",)])
    t2 = IdentityTable.from_dict(json.loads(json.dumps(t1.as_dict()))).allocate([("k8s:app=c",)])
    assert t2.get(("k8s:app=a",)) == t1.get(("k8s:app=a",)) == 256
    assert t2.get(("k8s:app=c",)) == 258 and t2.next_id == 259


def test_cidr_identities_are_deterministic_per_prefix() -> None:
    from ipaddress import IPv4Network

    x, y = IPv4Network("1.2.3.0/24"), IPv4Network("9.0.0.0/8")
    assert cidr_identities([x])[x] == cidr_identities([y, x])[x] >= 1 << 24


def test_empty_ingress_list_enforces_nothing_and_warns() -> None:
    spec = _spec(_cnp("p", {"endpointSelector": {}, "ingress": []}))
    assert _allowed(spec, WORLD, A, 80)
    c = compile_spec(spec, IdentityTable(), EndpointTable(), "h")
    assert any("did you mean `ingress: [{}]`" in w.message for w in c.warnings)


def test_one_empty_ingress_rule_isolates_and_allows_nothing() -> None:
    spec = _spec(_cnp("p", {"endpointSelector": {}, "ingress": [{}]}))
    assert not _allowed(spec, B, A, 80)
    assert _allowed(spec, C, C, 80)  # other namespace unaffected


def test_deny_beats_a_longer_allow_of_the_same_peer() -> None:
    spec = _spec(
        _cnp(
            "p",
            {
                "endpointSelector": {"matchLabels": {"app": "a"}},
                "ingress": [
                    {
                        "fromEndpoints": [{"matchLabels": {"app": "b"}}],
                        "toPorts": [{"ports": [{"port": "80", "protocol": "TCP"}]}],
                    }
                ],
                "ingressDeny": [{"fromEndpoints": [{"matchLabels": {"app": "b"}}]}],
            },
        )
    )
    assert not _allowed(spec, B, A, 80)


def test_cnp_selectors_are_scoped_to_the_policy_namespace() -> None:
    spec = _spec(
        _cnp("p", {"endpointSelector": {"matchLabels": {"app": "a"}}, "ingress": [{"fromEndpoints": [{}]}]})
    )
    assert _allowed(spec, B, A, 1)
    assert not _allowed(spec, C, A, 1)


def test_to_ports_only_rule_matches_world() -> None:
    spec = _spec(
        _cnp(
            "p",
            {
                "endpointSelector": {"matchLabels": {"app": "a"}},
                "ingress": [{"toPorts": [{"ports": [{"port": "53", "protocol": "UDP"}]}]}],
            },
        )
    )
    assert _allowed(spec, WORLD, A, 53, PROTO_UDP)
    assert not _allowed(spec, WORLD, A, 53, PROTO_TCP)


def test_k8s_ipblock_except_and_cidr_never_matches_pods() -> None:
    np = {
        "kind": "NetworkPolicy",
        "metadata": {"name": "n", "namespace": "demo"},
        "spec": {
            "podSelector": {"matchLabels": {"app": "a"}},
            "ingress": [{"from": [{"ipBlock": {"cidr": "0.0.0.0/0", "except": ["8.8.0.0/16"]}}]}],
        },
    }
    spec = _spec(np)
    assert _allowed(spec, IPv4Address("1.1.1.1"), A, 80)
    assert not _allowed(spec, WORLD, A, 80)
    assert not _allowed(spec, B, A, 80)


def test_named_port_resolves_on_destination() -> None:
    np = {
        "kind": "NetworkPolicy",
        "metadata": {"name": "n", "namespace": "demo"},
        "spec": {
            "podSelector": {},
            "policyTypes": ["Egress"],
            "egress": [{"to": [{"podSelector": {}}], "ports": [{"port": "http"}]}],
        },
    }
    spec = _spec(np)
    assert _allowed(spec, A, B, 9090) and not _allowed(spec, A, B, 8080)
    assert _allowed(spec, B, A, 8080)


def test_enforcement_modes() -> None:
    assert not _allowed(_spec(mode="always"), B, A, 80)
    deny_all = _cnp("p", {"endpointSelector": {}, "ingress": [{}]})
    assert _allowed(_spec(deny_all, mode="never"), B, A, 80)


def test_compile_is_deterministic() -> None:
    spec = _spec(_cnp("p", {"endpointSelector": {}, "egress": [{"toEntities": ["world"]}]}))
    one = compile_spec(spec, IdentityTable(), EndpointTable(), "h")
    two = compile_spec(spec, IdentityTable(), EndpointTable(), "h")
    assert [s.fingerprint() for s in one.nodes.values()] == [s.fingerprint() for s in two.nodes.values()]


@pytest.mark.parametrize(
    ("example", "src", "dst", "port", "needle"),
    [
        ("three-tier", "demo/frontend", "demo/database", "5432", "demo/default-deny"),
    ],
)
def test_trace_cli_names_the_isolating_policy(
    example: str, src: str, dst: str, port: str, needle: str
) -> None:
    from meshctl.cli.main import app

    root = REPO / "examples" / example
    r = CliRunner().invoke(
        app, ["policy", "trace", "--dir", str(root), "--from", src, "--to", dst, "--port", port]
    )
    assert r.exit_code == 0, r.output
    assert "DROPPED" in r.stdout.splitlines()[0] and needle in r.stdout


def test_trace_cli_production_war_story(tmp_path: Path) -> None:
    import shutil

    from meshctl.cli.main import app

    root = tmp_path / "production"
    shutil.copytree(REPO / "examples" / "production", root, ignore=shutil.ignore_patterns("state", "plans"))
    args = [
        "policy",
        "trace",
        "--dir",
        str(root),
        "--from",
        "production/cache",
        "--to",
        "production/postgres",
        "--port",
        "5432",
    ]
    before = CliRunner().invoke(app, args)
    assert before.exit_code == 0, before.output
    assert "FORWARDED" in before.stdout.splitlines()[0]
    shutil.copy(REPO / "examples" / "production-changes" / "database-security.yaml", root / "policies")
    after = CliRunner().invoke(app, args)
    assert after.exit_code == 0, after.output
    assert "DROPPED" in after.stdout.splitlines()[0]
    assert "database-security" in after.stdout and "default deny" in after.stdout


def test_mode_always_ignores_enable_default_deny_false() -> None:
    """Regression (found by the reference property test): Cilium synthesizes the allow-all of
    default-allow rules only when policyEnforcementMode is not `always`."""
    relaxed = _cnp(
        "p",
        {"endpointSelector": {}, "egress": [{}], "enableDefaultDeny": {"egress": False}},
    )
    assert _allowed(_spec(relaxed), A, WORLD, 53)
    assert not _allowed(_spec(relaxed, mode="always"), A, WORLD, 53)


@pytest.mark.parametrize("example", ["three-tier", "production"])
def test_rule_origins_name_the_line_of_the_rule_itself(example: str) -> None:
    from meshctl.compile import compile_cluster
    from meshctl.compile.trace import with_trace_ips
    from meshctl.source import load_desired

    root = REPO / "examples" / example
    compiled = compile_cluster(with_trace_ips(load_desired(root)), IdentityTable(), EndpointTable(), "h")
    assert compiled.rules
    for rule in compiled.rules:
        o = rule.origin
        text = (root / o.file).read_text().splitlines()[o.line - 1]
        assert text.strip().startswith("- "), f"{o} -> {o.file}:{o.line}: {text!r}"


def test_trace_names_the_rule_line() -> None:
    from meshctl.cli.main import app

    root = REPO / "examples" / "three-tier"
    lines = (root / "policies" / "api-to-database.yaml").read_text().splitlines()
    egress_line = next(i for i, t in enumerate(lines, 1) if "- toEndpoints:" in t)
    r = CliRunner().invoke(
        app, ["policy", "trace", "--dir", str(root), "--from", "demo/api", "--to", "demo/database",
              "--port", "5432"],
    )
    assert r.exit_code == 0, r.output
    assert f"egress[0] (policies/api-to-database.yaml:{egress_line})" in r.stdout


def test_l7_rule_shadowed_by_an_l4_allow_warns_and_port_stays_allowed() -> None:
    port80 = {"ports": [{"port": "80", "protocol": "TCP"}]}
    spec = _spec(
        _cnp(
            "p",
            {
                "endpointSelector": {"matchLabels": {"app": "a"}},
                "ingress": [
                    {
                        "fromEndpoints": [{"matchLabels": {"app": "b"}}],
                        "toPorts": [{**port80, "rules": {"http": [{"method": "GET"}]}}],
                    },
                    {"fromEndpoints": [{"matchLabels": {"app": "b"}}], "toPorts": [port80]},
                ],
            },
        )
    )
    c = compile_spec(spec, IdentityTable(), EndpointTable(), "h")
    codes = {w.code for w in c.warnings}
    assert "l7-ineffective" in codes and "l7-not-enforced" not in codes
    # the L4 allow wildcards L7: no redirect to the proxy, no HTTP rule on the node
    assert not any(e.proxy_port for st in c.nodes.values() for m in st.policies.values() for e in m.values())
    assert not any(st.http for st in c.nodes.values())
    ineffective = next(w for w in c.warnings if w.code == "l7-ineffective")
    assert "ingress[0]" in ineffective.message and "ingress[1]" in ineffective.message
    assert _allowed(spec, B, A, 80) and not _allowed(spec, B, A, 81)


@pytest.mark.parametrize("example", ["three-tier", "production", "services"])
def test_example_connectivity_checks_hold_in_compiled_entries_and_reference(example: str) -> None:
    """Every pod-to-pod check of an example: the compiled verdict, the reference and `expect` agree."""
    from meshctl.compile import compile_cluster
    from meshctl.compile.reference import Reference
    from meshctl.compile.spec import spec_from_desired
    from meshctl.compile.trace import with_trace_ips
    from meshctl.source import load_desired

    desired = with_trace_ips(load_desired(REPO / "examples" / example))
    compiled = compile_cluster(desired, IdentityTable(), EndpointTable(), "h")
    ref = Reference(spec_from_desired(desired))
    ips = {p.key: p.pod_ip for p in desired.pods}
    protos = {"TCP": PROTO_TCP, "UDP": PROTO_UDP}
    checked = 0
    for check in desired.checks:
        if not check.to_pod:
            continue  # service frontends are the load balancer's business, not policy's
        proto = protos[str(check.protocol).upper()]
        got = connection_verdict(compiled.nodes, ips[check.from_], ips[check.to], proto, int(check.port))
        want = ref.verdict(check.from_, check.to, int(check.port), proto)
        assert got.allowed == want == (check.expect == "allowed"), check.name
        checked += 1
    assert checked
