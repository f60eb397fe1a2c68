"""Plain Kubernetes YAML without meshctl.toml: the implicit one-node cluster `policy trace` uses.

examples/kubectl-export/kubectl-export.yaml is shaped like `kubectl get ns,pods,netpol,cnp,ccnp -A -o yaml`:
a `kind: List` with server-written metadata, a Deployment's pod, a pod on another node, a
pending pod without an address, a hostNetwork pod, a finished pod whose address was reused.
"""

from __future__ import annotations

import json
import subprocess
import sys
from ipaddress import IPv4Address, IPv4Network
from pathlib import Path

import pytest

from meshctl.compile.trace import with_trace_ips
from meshctl.errors import SourceError
from meshctl.source import load_desired
from meshctl.source.plain import IMPLICIT_NODE, covering, load_plain_dir, load_plain_text

EXPORT = Path(__file__).resolve().parents[3] / "examples" / "kubectl-export" / "kubectl-export.yaml"
MESHCTL = Path(sys.executable).with_name("meshctl")
API, WEB = "shop/api-7d9f6c8b5-x2k9p", "shop/web-5c9b7d-abcde"


def meshctl(*args: str, stdin: str | None = None, cwd: Path | None = None) -> subprocess.CompletedProcess:
    return subprocess.run([str(MESHCTL), *args], input=stdin, capture_output=True, text=True,
                          timeout=60, cwd=cwd)


def test_a_kubectl_list_becomes_a_one_node_cluster() -> None:
    plain = load_plain_text(EXPORT.read_text(), "<stdin>")
    desired = plain.desired
    assert [p.key for p in desired.pods] == [API, WEB, "tools/probe"]
    assert {p.node_name for p in desired.pods} == {IMPLICIT_NODE}
    assert [n.name for n in desired.config.nodes] == [IMPLICIT_NODE]
    assert desired.config.nodes[0].pod_cidr == IPv4Network("10.244.0.0/22")
    assert desired.pod(API).pod_ip == IPv4Address("10.244.1.7")  # not the finished pod's
    assert desired.pod("tools/probe").pod_ip is None
    assert [p.metadata.name for p in desired.policies] == ["api-from-web", "tools-no-egress"]
    assert {n.name: n.labels for n in desired.namespaces} == {
        "shop": {"kubernetes.io/metadata.name": "shop", "team": "web"}, "tools": {}}
    assert desired.policies[0].source.file == "<stdin>" and desired.policies[0].source.line == 122
    assert plain.note == (
        "<stdin>: no meshctl.toml, tracing on an implicit one-node cluster (3 pods, podCIDR "
        "10.244.0.0/22); 1 pod has no status.podIP (traced at a placeholder address); "
        "skipped 1 Succeeded pod, 1 hostNetwork pod; namespaces without a Namespace "
        "document, assumed unlabelled: tools"
    )
    placed = with_trace_ips(desired)
    assert placed.pod("tools/probe").pod_ip in IPv4Network("10.244.0.0/22")
    assert placed.pod("tools/probe").pod_ip not in {IPv4Address("10.244.1.7"), IPv4Address("10.244.2.4")}


def test_a_directory_of_files_and_typed_lists(tmp_path: Path) -> None:
    (tmp_path / "ns").mkdir()
    (tmp_path / "ns" / "namespaces.yml").write_text(
        "apiVersion: v1\nkind: NamespaceList\nitems:\n- metadata: {name: a, labels: {env: prod}}\n")
    (tmp_path / "pods.yaml").write_text(
        "apiVersion: v1\nkind: PodList\nitems:\n"
        "- metadata: {name: x, namespace: a, labels: {app: x}}\n  spec: {containers: []}\n"
        "  status: {podIP: 192.168.7.9}\n"
        "- metadata: {name: y, namespace: a}\n  spec: {nodeName: gke-pool-1-abc}\n"
        "  status: {podIP: 192.168.9.1}\n")
    (tmp_path / ".hidden.yaml").write_text("not: [a document meshctl reads\n")
    (tmp_path / "notes.txt").write_text("kind: []\n")
    desired = load_plain_dir(tmp_path).desired
    assert [p.key for p in desired.pods] == ["a/x", "a/y"]
    assert desired.namespace("a").labels == {"env": "prod"}
    assert desired.config.nodes[0].pod_cidr == IPv4Network("192.168.0.0/20")
    assert desired.pod("a/y").source.file == "pods.yaml" and desired.pod("a/y").source.line == 7


def test_errors_name_the_file_and_line_of_the_item(tmp_path: Path) -> None:
    (tmp_path / "export.yaml").write_text(
        "apiVersion: v1\nkind: List\nitems:\n"
        "- apiVersion: v1\n  kind: Pod\n  metadata: {name: a, namespace: d}\n  spec: {}\n"
        "  status: {podIP: 10.0.0.1}\n"
        "- apiVersion: v1\n  kind: Pod\n  metadata: {name: b, namespace: d}\n  spec: {}\n"
        "  status: {podIP: 10.0.0.1}\n")
    with pytest.raises(SourceError) as info:
        load_plain_dir(tmp_path)
    assert str(info.value) == "export.yaml:13: status.podIP: 10.0.0.1 is also the IP of d/a"
    with pytest.raises(SourceError) as info:
        load_plain_text("apiVersion: v1\nkind: Pod\nmetadata: {name: a}\n", "<stdin>")
    assert str(info.value) == "<stdin>:1: spec: required field is missing"


def test_a_desired_repo_still_needs_its_nodes(tmp_path: Path) -> None:
    """Only the plain reading forgives spec.nodeName: a repo with meshctl.toml is as strict as ever."""
    (tmp_path / "meshctl.toml").write_text(
        '[cluster]\nname = "t"\n[[nodes]]\nname = "n1"\npodCIDR = "10.9.0.0/24"\n')
    (tmp_path / "pods.yaml").write_text(
        "apiVersion: v1\nkind: Namespace\nmetadata: {name: d}\n---\n"
        "apiVersion: v1\nkind: Pod\nmetadata: {name: a, namespace: d}\nspec: {containers: []}\n")
    with pytest.raises(SourceError) as info:
        load_desired(tmp_path)
    assert str(info.value) == "pods.yaml:8: spec.nodeName: required field is missing"


@pytest.mark.parametrize(
    ("addresses", "room", "expected"),
    [
        (["10.244.1.7", "10.244.2.4"], 0, "10.244.0.0/22"),
        (["10.244.1.7"], 0, "10.244.1.7/32"),
        (["10.244.1.7"], 1, "10.244.1.0/28"),
        ([], 0, "10.244.0.0/16"),
        ([], 70_000, "10.244.0.0/15"),
        (["10.1.2.3", "192.168.0.1"], 0, "0.0.0.0/0"),
    ],
)
def test_covering(addresses: list[str], room: int, expected: str) -> None:
    assert covering([IPv4Address(a) for a in addresses], room) == IPv4Network(expected)


def test_cli_stdin_batch_is_pure_json_and_the_note_is_said_once(tmp_path: Path) -> None:
    batch = tmp_path / "q.jsonl"
    batch.write_text(
        json.dumps({"src": WEB, "dst": API, "port": 3000}) + "\n"
        + json.dumps({"src": "tools/probe", "dst": API, "port": 3000}) + "\n"
        + json.dumps({"src": "10.244.2.4", "dst": "10.244.1.7", "port": 8080}) + "\n")
    res = meshctl("policy", "trace", "--dir", "-", "--batch", str(batch),
                  stdin=EXPORT.read_text(), cwd=tmp_path)
    assert res.returncode == 0, res.stderr
    answers = [json.loads(line) for line in res.stdout.splitlines()]
    assert [a["allowed"] for a in answers] == [True, False, False]
    assert answers[0]["ingress"]["explanation"] == (
        "ALLOWED by NetworkPolicy shop/api-from-web ingress[0] (<stdin>:136)")
    assert answers[1]["egress"]["explanation"].startswith(
        "DROPPED (default deny: tools/probe egress isolated by "
        "CiliumClusterwideNetworkPolicy tools-no-egress")
    assert res.stderr.splitlines() == [
        "note: <stdin>: no meshctl.toml, tracing on an implicit one-node cluster (3 pods, podCIDR "
        "10.244.0.0/22); 1 pod has no status.podIP (traced at a placeholder address); "
        "skipped 1 Succeeded pod, 1 hostNetwork pod; namespaces without a Namespace "
        "document, assumed unlabelled: tools"]
    assert sorted(p.name for p in tmp_path.iterdir()) == ["q.jsonl"]


def test_cli_plain_directory_text_trace(tmp_path: Path) -> None:
    (tmp_path / "export.yaml").write_text(EXPORT.read_text())
    res = meshctl("policy", "trace", "--dir", str(tmp_path), "--from", WEB, "--to", API, "--port", "3000")
    assert res.returncode == 0, res.stderr
    assert res.stdout.splitlines()[0] == "web-5c9b7d-abcde -> api-7d9f6c8b5-x2k9p:3000/TCP FORWARDED"
    assert res.stderr.startswith(f"note: {tmp_path}: no meshctl.toml") and res.stderr.count("\n") == 1
    assert not (tmp_path / "meshctl.toml").exists() and not (tmp_path / "state").exists()


def test_a_desired_repo_may_hold_a_kubectl_list(tmp_path: Path) -> None:
    (tmp_path / "meshctl.toml").write_text(
        '[cluster]\nname = "t"\n[[nodes]]\nname = "n1"\npodCIDR = "10.9.0.0/24"\n')
    (tmp_path / "export.yaml").write_text(
        "apiVersion: v1\nkind: List\nmetadata: {resourceVersion: ''}\nitems:\n"
        "- apiVersion: v1\n  kind: Namespace\n  metadata: {name: d, uid: 1b2c}\n  status: {phase: Active}\n"
        "- apiVersion: v1\n  kind: Pod\n  metadata: {name: a, namespace: d, generateName: a-}\n"
        "  spec: {nodeName: n1}\n  status: {podIP: 10.9.0.7}\n")
    desired = load_desired(tmp_path)
    assert [p.key for p in desired.pods] == ["d/a"] and desired.pods[0].source.line == 9


def test_cli_single_file(tmp_path: Path) -> None:
    res = meshctl("policy", "trace", "--dir", str(EXPORT), "--from", "tools/probe", "--to", WEB,
                  "--port", "80", "-o", "json")
    assert res.returncode == 0, res.stderr
    assert json.loads(res.stdout)["allowed"] is False
    assert res.stderr.startswith("note: kubectl-export.yaml: no meshctl.toml")
