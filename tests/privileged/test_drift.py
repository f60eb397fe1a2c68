"""Drift: a hand change on a node (bpftool delete, a detached program) is found, named, healed."""

from __future__ import annotations

import json
import subprocess
from collections.abc import Iterator
from pathlib import Path

import pytest
from apply_helpers import connect, lab_of, meshctl, three_tier_copy, unique_cluster

pytestmark = [pytest.mark.privileged, pytest.mark.lab]

CLUSTER = unique_cluster("t-ap-drift")


@pytest.fixture(scope="module")
def repo(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Path]:
    root = three_tier_copy(tmp_path_factory.mktemp("drift") / "repo", CLUSTER)
    with lab_of(root):
        res = meshctl(root, "apply", "--auto-approve")
        assert res.returncode == 0, res.stdout + res.stderr
        yield root


def test_no_drift_after_apply(repo: Path) -> None:
    res = meshctl(repo, "drift", "--detailed-exitcode")
    assert res.returncode == 0, res.stdout + res.stderr
    assert "No drift" in res.stdout


def test_bpftool_delete_is_drift_and_heal_fixes_it(repo: Path) -> None:
    # demo/api (10.101.2.2/32) vanishes from node-1's ipcache: frontend's egress to api now sees
    # world, so the allowed connection breaks
    subprocess.run(
        ["bpftool", "map", "delete", "pinned", f"/sys/fs/bpf/meshctl/{CLUSTER}/node-1/ipcache",
         "key", "hex", "20", "00", "00", "00", "0a", "65", "02", "02"], check=True,
    )
    assert not connect(CLUSTER, "demo/frontend", "demo/api", 3000)
    res = meshctl(repo, "drift", "--detailed-exitcode")
    assert res.returncode == 2, res.stdout + res.stderr
    assert "node-1 ipcache 10.101.2.2/32: missing on the node (deleted outside meshctl)" in res.stdout
    assert "node node-2: no drift" in res.stdout

    res = meshctl(repo, "drift", "-o", "json")
    assert res.returncode == 0
    doc = json.loads(res.stdout)
    assert doc["drift"] is True and list(doc["nodes"]) == ["node-1"]
    assert [c["address"] for c in doc["nodes"]["node-1"]] == ["node-1 ipcache 10.101.2.2/32"]

    res = meshctl(repo, "drift", "--heal")
    assert res.returncode == 0, res.stdout + res.stderr
    assert "Apply complete: 1 node(s) updated, 1 verified by " in res.stdout
    assert connect(CLUSTER, "demo/frontend", "demo/api", 3000)
    assert meshctl(repo, "drift", "--detailed-exitcode").returncode == 0


def test_detached_program_is_drift(repo: Path) -> None:
    from meshctl.dataplane.node import NodeDatapath
    from meshctl.lab import registry

    pod = registry.pod(CLUSTER, "demo/database")
    node = registry.lab_nodes(CLUSTER)[pod.node]
    NodeDatapath(CLUSTER, pod.node, node.netns).detach(pod.veth)
    res = meshctl(repo, "drift", "--detailed-exitcode", "-o", "markdown")
    assert res.returncode == 2, res.stdout + res.stderr
    assert "| node-3 |" in res.stdout and "attachment" in res.stdout
    assert meshctl(repo, "drift", "--heal").returncode == 0
    assert meshctl(repo, "drift", "--detailed-exitcode").returncode == 0
    assert not connect(CLUSTER, "demo/frontend", "demo/database", 5432)
    assert connect(CLUSTER, "demo/api", "demo/database", 5432)
