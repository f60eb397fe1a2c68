"""`meshctl identity list|get` on a copy of examples/three-tier (with and without a state)."""

from __future__ import annotations

import json
import shutil
import subprocess
import sys
from pathlib import Path

import pytest
from typer.testing import CliRunner

from meshctl.cli.main import app
from meshctl.compile import IdentityTable
from meshctl.errors import MeshctlError
from meshctl.state import State, save_state

REPO = Path(__file__).resolve().parents[3]
NS = "k8s:io.kubernetes.pod.namespace"


@pytest.fixture()
def repo(tmp_path: Path) -> Path:
    root = tmp_path / "three-tier"
    shutil.copytree(REPO / "examples" / "three-tier", root, ignore=shutil.ignore_patterns("state", "plans"))
    return root


def _run(*args: str) -> tuple[int, str, str]:
    r = CliRunner().invoke(app, ["identity", *args])
    return r.exit_code, r.stdout, r.stderr


def _listed(root: Path) -> dict[int, dict]:
    code, out, err = _run("list", "-C", str(root), "-o", "json")
    assert code == 0, err
    return {row["id"]: row for row in json.loads(out)}


def test_list_gives_each_label_set_one_identity_with_its_pods(repo: Path) -> None:
    rows = _listed(repo)
    assert min(rows) >= 256
    by_pod = {pod: row for row in rows.values() for pod in row["pods"]}
    assert set(by_pod) == {"demo/frontend", "demo/api", "demo/database", "kube-system/kube-dns"}
    api = by_pod["demo/api"]
    assert "k8s:app=api" in api["labels"] and f"{NS}=demo" in api["labels"]
    assert "k8s:io.cilium.k8s.namespace.labels.team=shop" in api["labels"]
    assert len({row["id"] for row in by_pod.values()}) == 4
    code, out, _ = _run("list", "-C", str(repo))
    assert code == 0
    assert f"{api['id']:<8} " in out and "         demo/api" in out


def test_get_shows_labels_and_pods(repo: Path) -> None:
    ident = next(i for i, row in _listed(repo).items() if "demo/database" in row["pods"])
    code, out, err = _run("get", str(ident), "-C", str(repo))
    assert code == 0, err
    lines = out.splitlines()
    assert lines[0] == f"identity {ident}"
    assert "  k8s:app=database" in lines and "  demo/database" in lines
    assert lines.index("pods:") > lines.index("labels:")


def test_get_reserved_identity_has_labels_and_no_pods(repo: Path) -> None:
    code, out, _ = _run("get", "2", "-C", str(repo), "-o", "json")
    assert code == 0
    assert json.loads(out) == {"id": 2, "labels": ["reserved:world"], "pods": []}


def test_get_unknown_identity_is_one_clear_error(repo: Path) -> None:
    """Through the real entry point: one line on stderr, exit 1, no traceback."""
    meshctl = Path(sys.executable).parent / "meshctl"
    r = subprocess.run(
        [str(meshctl), "identity", "get", "99999", "-C", str(repo)],
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert r.returncode == 1 and r.stdout == ""
    assert r.stderr.startswith("Error: no identity 99999") and "meshctl identity list" in r.stderr
    assert len(r.stderr.strip().splitlines()) == 1


def test_bad_output_and_bad_repo_are_meshctl_errors(repo: Path, tmp_path: Path) -> None:
    r = CliRunner().invoke(app, ["identity", "list", "-C", str(repo), "-o", "yaml"])
    assert r.exit_code != 0 and "'yaml' is not one of 'text', 'json'" in r.output
    r = CliRunner().invoke(app, ["identity", "list", "-C", str(tmp_path / "missing")])
    assert isinstance(r.exception, MeshctlError) and "not found" in str(r.exception)


def test_numbers_come_from_the_state_identity_table(repo: Path) -> None:
    """After a plan allocated numbers, list/get show those, not the ones a fresh table would give."""
    fresh = _listed(repo)
    api_labels = next(tuple(r["labels"]) for r in fresh.values() if "demo/api" in r["pods"])
    table = IdentityTable({api_labels: 4242}, 4243)
    save_state(repo / "state", State().with_tables(table.as_dict(), {}))
    rows = _listed(repo)
    assert rows[4242]["pods"] == ["demo/api"]
    others = [i for i, r in rows.items() if "demo/api" not in r["pods"]]
    assert others and min(others) >= 4243  # new label sets continue after the table's next_id
    code, out, _ = _run("get", "4242", "-C", str(repo))
    assert code == 0 and "demo/api" in out
