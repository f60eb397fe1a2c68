"""The conformance cases through `meshctl policy trace --dir` on plain Kubernetes YAML.

Each case becomes what a user gets from `kubectl get ns,pods,netpol -A -o yaml`: server-written
metadata, Namespaces with spec and status, Pods with status.podIP on made-up nodes or none, and
no meshctl.toml. Every assertion of every case goes through `--batch` of the real command, and
stdout must stay one JSON object per query (the implicit-cluster note goes to stderr, once).
Half the cases are written as one `kind: List` file, the others as one file per kind; one case
is piped through stdin (`--dir -`) of the installed command.
"""

from __future__ import annotations

import contextlib
import io
import json
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
import yaml
from netpol_cases import ARCHIVE, extract_cases, load, pod_addresses, representatives

from meshctl.cli.main import main

MESHCTL = Path(sys.executable).with_name("meshctl")
NODES = (None, "kind-worker", "kind-worker2")  # spec.nodeName: absent or a node meshctl never heard of

pytestmark = pytest.mark.skipif(not ARCHIVE.exists(), reason=f"{ARCHIVE} is absent")


@pytest.fixture(scope="module")
def cases_dir(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Path]:
    out = tmp_path_factory.mktemp("conformance-plain")
    yield extract_cases(out)


def _namespace(name: str, labels: dict[str, str], n: int) -> dict[str, Any]:
    return {
        "apiVersion": "v1",
        "kind": "Namespace",
        "metadata": {
            "creationTimestamp": "2026-11-30T09:12:41Z",
            "labels": labels,
            "name": name,
            "resourceVersion": str(400 + n),
            "uid": f"00000000-0000-4000-8000-{n:012d}",
        },
        "spec": {"finalizers": ["kubernetes"]},
        "status": {"phase": "Active"},
    }


def _pod(p: dict[str, Any], ip: str, n: int) -> dict[str, Any]:
    ports = [
        {k: v for k, v in (("name", cp.get("name")), ("containerPort", cp["containerPort"]),
                           ("protocol", cp.get("protocol") or "TCP")) if v is not None}
        for cp in p.get("ports") or ()
        if cp.get("containerPort") is not None
    ]
    spec: dict[str, Any] = {
        "containers": [{"image": "example/app:1.0", "name": "app", "ports": ports, "resources": {}}],
        "dnsPolicy": "ClusterFirst",
        "restartPolicy": "Always",
    }
    if NODES[n % len(NODES)]:
        spec["nodeName"] = NODES[n % len(NODES)]
    return {
        "apiVersion": "v1",
        "kind": "Pod",
        "metadata": {
            "generateName": f"{p['name']}-",
            "labels": p.get("labels") or {},
            "name": p["name"],
            "namespace": p["namespace"],
            "resourceVersion": str(700 + n),
            "uid": f"11111111-0000-4000-8000-{n:012d}",
        },
        "spec": spec,
        "status": {"hostIP": "172.18.0.3", "phase": "Running", "podIP": ip, "podIPs": [{"ip": ip}]},
    }


def _api_server_name(policy: dict[str, Any]) -> dict[str, Any]:
    """A few upstream test manifests name policies `a_b`, which no API server accepts (object
    names are DNS subdomains), so no export holds them: an export would say `a-b`."""
    meta = policy["metadata"]
    if "_" not in meta["name"]:
        return policy
    return {**policy, "metadata": {**meta, "name": meta["name"].replace("_", "-")}}


def kubectl_export(case: dict[str, Any]) -> list[dict[str, Any]]:
    """Namespaces, pods and policies of a case as `kubectl get ... -o yaml` shows them."""
    ips = pod_addresses(case)
    items = [_namespace(ns, labels, n) for n, (ns, labels) in enumerate(case["namespaces"].items())]
    items += [_pod(p, str(ips[f"{p['namespace']}/{p['name']}"]), n) for n, p in enumerate(case["pods"])]
    return items + [_api_server_name(p) for p in case["policies"]]


def write_plain_dir(case: dict[str, Any], root: Path, as_list: bool) -> None:
    root.mkdir()
    items = kubectl_export(case)
    if as_list:
        doc = {"apiVersion": "v1", "items": items, "kind": "List", "metadata": {"resourceVersion": ""}}
        (root / "export.yaml").write_text(yaml.safe_dump(doc))
        return
    assert {d["kind"] for d in items} <= {"Namespace", "Pod", "NetworkPolicy", "CiliumNetworkPolicy"}
    for kinds, name in ((("Namespace",), "namespaces.yaml"), (("Pod",), "pods.yaml"),
                        (("NetworkPolicy", "CiliumNetworkPolicy"), "policies.yaml")):
        (root / name).write_text(yaml.safe_dump_all([d for d in items if d["kind"] in kinds]))


def queries(case: dict[str, Any]) -> tuple[list[str], list[bool]]:
    """One JSONL query per assertion (an external CIDR stands for a middle address of it)."""
    ips = pod_addresses(case)
    avoid = set(ips.values())
    reps: dict[str, str] = {}
    lines, expected = [], []
    for q in case["expected"]:
        ends = []
        for end in (q["src"], q["dst"]):
            if end not in ips and end not in reps:
                cands = representatives(end, avoid)
                reps[end] = str(cands[len(cands) // 2])
            ends.append(end if end in ips else reps[end])
        query = {"src": ends[0], "dst": ends[1], "port": q["port"], "protocol": q["protocol"]}
        lines.append(json.dumps(query))
        expected.append(q["allowed"])
    return lines, expected


def trace_batch(args: list[str]) -> tuple[int, str, str]:
    out, err = io.StringIO(), io.StringIO()
    with contextlib.redirect_stdout(out), contextlib.redirect_stderr(err):
        try:
            main(args)
        except SystemExit as exit_:
            code = exit_.code
        else:
            code = 0
    return (code if isinstance(code, int) else 1), out.getvalue(), err.getvalue()


def test_every_case_through_plain_dir_trace(cases_dir: Path, tmp_path: Path) -> None:
    files = sorted(cases_dir.glob("*.json"))
    assert len(files) == 106
    checked = 0
    failures: list[str] = []
    for n, path in enumerate(files):
        case = load(path)
        root = tmp_path / path.stem
        write_plain_dir(case, root, as_list=n % 2 == 0)
        lines, expected = queries(case)
        batch = tmp_path / f"{path.stem}.jsonl"
        batch.write_text("\n".join(lines) + "\n")
        code, stdout, stderr = trace_batch(["policy", "trace", "--dir", str(root), "--batch", str(batch)])
        assert code == 0, f"{path.name}: {stderr}"
        assert not (root / "meshctl.toml").exists()
        notes = stderr.splitlines()
        assert len(notes) == 1 and "no meshctl.toml, tracing on an implicit one-node cluster" in notes[0]
        assert f"({len(case['pods'])} pod" in notes[0]
        got = [json.loads(line) for line in stdout.splitlines()]
        assert len(got) == len(expected)
        for query, answer, allowed in zip(lines, got, expected, strict=True):
            checked += 1
            if answer["allowed"] != allowed and len(failures) < 20:
                failures.append(f"{path.name}: {query} expected allowed={allowed}, got {answer}")
    assert not failures, "\n".join(failures)
    assert checked == 406_104


def test_one_case_piped_from_kubectl_through_stdin(cases_dir: Path, tmp_path: Path) -> None:
    """`kubectl get ns,pods,netpol -A -o yaml | meshctl policy trace --dir - --batch Q`."""
    case = load(cases_dir / "npa__netpol_named_port_test_2.json")
    export = {"apiVersion": "v1", "items": kubectl_export(case), "kind": "List", "metadata": {}}
    lines, expected = queries(case)
    batch = tmp_path / "queries.jsonl"
    batch.write_text("\n".join(lines) + "\n")
    res = subprocess.run([str(MESHCTL), "policy", "trace", "--dir", "-", "--batch", str(batch)],
                         input=yaml.safe_dump(export), capture_output=True, text=True, timeout=120,
                         cwd=tmp_path)
    assert res.returncode == 0, res.stderr
    assert res.stderr.count("\n") == 1 and res.stderr.startswith("note: <stdin>: no meshctl.toml")
    got = [json.loads(line)["allowed"] for line in res.stdout.splitlines()]
    assert got == expected and len(got) > 100
    assert list(tmp_path.iterdir()) == [batch]  # nothing written: no meshctl.toml, no state
