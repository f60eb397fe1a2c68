"""A failing verification reverts nodes to exactly their earlier maps and stops the rollout."""

from __future__ import annotations

import json
import re
from collections.abc import Iterator
from pathlib import Path

import pytest
from apply_helpers import connect, lab_of, map_dumps, meshctl, observe_all, three_tier_copy, unique_cluster

pytestmark = [pytest.mark.privileged, pytest.mark.lab]

CLUSTER = unique_cluster("t-ap-rev")
NODES = ("node-1", "node-2", "node-3")
CHECK = """apiVersion: meshctl.io/v1alpha1
kind: ConnectivityCheck
metadata:
  name: {name}
spec:
  from: {src}
  to: {dst}
  port: {port}
  expect: {expect}
"""


@pytest.fixture(scope="module")
def repo(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Path]:
    root = three_tier_copy(tmp_path_factory.mktemp("revert") / "repo", CLUSTER)
    with lab_of(root):
        res = meshctl(root, "apply", "--auto-approve")
        assert res.returncode == 0, res.stdout + res.stderr
        yield root


def drop_dns_tcp(repo: Path) -> str:
    """The change under test: allow-dns loses 53/TCP (touches every demo pod, on every node)."""
    path = repo / "policies" / "allow-dns.yaml"
    original = path.read_text()
    changed = re.sub(r"\n\s*- port: \"53\"\n\s*protocol: TCP", "", original)
    assert changed != original
    path.write_text(changed)
    return original


def serial(repo: Path) -> int:
    return int(json.loads((repo / "state" / "state.json").read_text())["serial"])


def test_failed_check_reverts_canary_exactly_and_stops(repo: Path) -> None:
    before = {n: map_dumps(CLUSTER, n) for n in NODES}
    observed = observe_all(repo)
    serial_before = serial(repo)
    check = repo / "checks" / "dns-tcp.yaml"
    check.write_text(CHECK.format(name="frontend-dns-tcp", src="demo/frontend", dst="kube-system/kube-dns",
                                  port=53, expect="allowed"))
    original = drop_dns_tcp(repo)
    try:
        res = meshctl(repo, "apply", "--auto-approve")
        assert res.returncode == 1, res.stdout + res.stderr
        assert "check frontend-dns-tcp" in res.stderr and "observed denied: FAILED" in res.stderr
        assert "Reverted to the exact before-state: node-1." in res.stdout
        assert "applying batch" not in res.stderr  # stopped after the canary
        for node in NODES:
            assert map_dumps(CLUSTER, node) == before[node], node
        assert observe_all(repo) == observed
        assert serial(repo) == serial_before
        assert not (repo / "state" / "journal.jsonl").exists()
        assert connect(CLUSTER, "demo/frontend", "demo/api", 3000)
    finally:
        (repo / "policies" / "allow-dns.yaml").write_text(original)
        check.unlink()
    assert meshctl(repo, "plan", "--detailed-exitcode").returncode == 0


def test_rollback_all_reverts_every_node_newest_first(repo: Path) -> None:
    before = {n: map_dumps(CLUSTER, n) for n in NODES}
    check = repo / "checks" / "wrong.yaml"
    check.write_text(CHECK.format(name="api-db-wrongly-denied", src="demo/api", dst="demo/database",
                                  port=5432, expect="denied"))
    original = drop_dns_tcp(repo)
    try:
        res = meshctl(repo, "apply", "--auto-approve", "--rollback", "all")
        assert res.returncode == 1, res.stdout + res.stderr
        assert "check api-db-wrongly-denied" in res.stderr
        assert "Reverted to the exact before-state: node-3, node-2, node-1." in res.stdout
        for node in NODES:
            assert map_dumps(CLUSTER, node) == before[node], node
    finally:
        (repo / "policies" / "allow-dns.yaml").write_text(original)
        check.unlink()


def test_rollback_node_keeps_verified_nodes(repo: Path) -> None:
    check = repo / "checks" / "wrong.yaml"
    check.write_text(CHECK.format(name="api-db-wrongly-denied", src="demo/api", dst="demo/database",
                                  port=5432, expect="denied"))
    original = drop_dns_tcp(repo)
    try:
        old = serial(repo)
        res = meshctl(repo, "apply", "--auto-approve")  # rollback = "node" from meshctl.toml
        assert res.returncode == 1
        assert "Reverted to the exact before-state: node-3." in res.stdout
        assert "Kept (applied and verified earlier): node-1, node-2." in res.stdout
        assert serial(repo) == old + 1  # the kept nodes are recorded in the state
        check.unlink()
        res = meshctl(repo, "plan", "--detailed-exitcode", "-o", "json")
        assert res.returncode == 2
        plan = json.loads(res.stdout)
        assert [n["node"] for n in plan["nodes"] if n["resource_changes"]] == ["node-3"]
    finally:
        (repo / "policies" / "allow-dns.yaml").write_text(original)
        check.unlink(missing_ok=True)
    assert meshctl(repo, "apply", "--auto-approve").returncode == 0
