"""The third-party NetworkPolicy conformance suite (../shared/conformance), when present.

Each case is compiled once onto one node and every assertion is checked with meshctl.verdicts
over the compiled NodeState (the datapath's lookup precedence). One case also runs end to end
through `meshctl policy trace --batch` on a desired repo written from the case.
"""

from __future__ import annotations

import json
from collections.abc import Iterator
from pathlib import Path

import pytest
import yaml
from netpol_cases import ARCHIVE, PROTO, case_spec, extract_cases, load, pod_addresses, representatives

from meshctl.compile import EndpointTable, IdentityTable, compile_spec
from meshctl.verdicts import connection_verdict

pytestmark = pytest.mark.skipif(not ARCHIVE.exists(), reason=f"{ARCHIVE} is absent")


@pytest.fixture(scope="module")
def cases_dir(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Path]:
    out = tmp_path_factory.mktemp("conformance")
    yield extract_cases(out)


def test_every_case_agrees(cases_dir: Path) -> None:
    files = sorted(cases_dir.glob("*.json"))
    assert len(files) == 106
    checked = 0
    failures: list[str] = []
    for path in files:
        case = load(path)
        compiled = compile_spec(case_spec(case), IdentityTable(), EndpointTable(), "conformance")
        ips = pod_addresses(case)
        avoid = set(ips.values())
        reps: dict[str, list] = {}
        for q in case["expected"]:
            addrs = []
            for end in (q["src"], q["dst"]):
                if end in ips:
                    addrs.append(ips[end])
                else:
                    if end not in reps:
                        reps[end] = representatives(end, avoid)
                    addrs.append(reps[end][len(reps[end]) // 2])
            v = connection_verdict(compiled.nodes, addrs[0], addrs[1], PROTO[q["protocol"]], q["port"])
            checked += 1
            if v.allowed != q["allowed"] and len(failures) < 20:
                failures.append(f"{path.name}: {q} -> {v}")
    assert not failures, "\n".join(failures)
    assert checked == 406_104


def _write_repo(case: dict, root: Path) -> None:
    """A desired repo (meshctl.toml + YAML) equivalent to one case."""
    root.mkdir()
    (root / "meshctl.toml").write_text(
        '[cluster]\nname = "conformance"\n\n[[nodes]]\nname = "node-1"\npodCIDR = "10.250.0.0/16"\n'
    )
    ips = pod_addresses(case)
    docs: list[dict] = []
    for ns, labels in case["namespaces"].items():
        docs.append({"apiVersion": "v1", "kind": "Namespace", "metadata": {"name": ns, "labels": labels}})
    for p in case["pods"]:
        ports = [
            {
                k: v
                for k, v in (
                    ("name", cp.get("name")),
                    ("containerPort", cp["containerPort"]),
                    ("protocol", cp.get("protocol") or "TCP"),
                )
                if v is not None
            }
            for cp in p.get("ports") or ()
            if cp.get("containerPort") is not None
        ]
        docs.append(
            {
                "apiVersion": "v1",
                "kind": "Pod",
                "metadata": {"name": p["name"], "namespace": p["namespace"], "labels": p.get("labels") or {}},
                "spec": {"nodeName": "node-1", "containers": [{"name": "c", "ports": ports}]},
                "status": {"podIP": str(ips[f"{p['namespace']}/{p['name']}"])},
            }
        )
    (root / "inventory.yaml").write_text(yaml.safe_dump_all(docs))
    (root / "policies.yaml").write_text(yaml.safe_dump_all(case["policies"]))


def test_one_case_end_to_end_through_cli_batch(cases_dir: Path, tmp_path: Path) -> None:
    from typer.testing import CliRunner

    from meshctl.cli.main import app

    case = load(cases_dir / "npa__netpol_named_port_test_2.json")
    root = tmp_path / "repo"
    _write_repo(case, root)
    ips = pod_addresses(case)
    avoid = set(ips.values())
    queries, expected = [], []
    for q in case["expected"]:
        ends = [e if e in ips else str(representatives(e, avoid)[1]) for e in (q["src"], q["dst"])]
        queries.append(
            json.dumps({"src": ends[0], "dst": ends[1], "port": q["port"], "protocol": q["protocol"]})
        )
        expected.append(q["allowed"])
    batch = tmp_path / "queries.jsonl"
    batch.write_text("\n".join(queries) + "\n")
    result = CliRunner().invoke(app, ["policy", "trace", "--dir", str(root), "--batch", str(batch)])
    assert result.exit_code == 0, result.output
    got = [json.loads(line)["allowed"] for line in result.stdout.splitlines()]
    assert len(got) == len(expected) > 100
    assert got == expected
