"""plan -> apply -> plan in the lab with examples/three-tier: real enforcement, stale and
tampered plans refused, one apply at a time (the state lock)."""

from __future__ import annotations

import json
import shutil
import subprocess
from collections.abc import Iterator
from pathlib import Path

import pytest
from apply_helpers import connect, lab_of, meshctl, observe_all, three_tier_copy, unique_cluster

pytestmark = [pytest.mark.privileged, pytest.mark.lab]

CLUSTER = unique_cluster("t-ap-apply")


@pytest.fixture(scope="module")
def repo(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Path]:
    root = three_tier_copy(tmp_path_factory.mktemp("apply") / "repo", CLUSTER)
    with lab_of(root):
        yield root


def ensure_applied(repo: Path) -> None:
    res = meshctl(repo, "apply", "--auto-approve")
    assert res.returncode == 0, res.stderr


def test_plan_apply_enforces_then_no_changes(repo: Path) -> None:
    # before: the lab's datapath is attached with empty maps, so pods are not endpoints yet
    assert not connect(CLUSTER, "demo/frontend", "demo/api", 3000)

    res = meshctl(repo, "plan", "--detailed-exitcode")
    assert res.returncode == 2, res.stderr
    assert "+ node-1 ipcache" in res.stdout and "to add, 0 to change, 0 to destroy" in res.stdout
    assert "+ node-3 policy demo/database ingress allow demo/api tcp/5432" in res.stdout
    assert not list((repo / "plans").glob("plan-*.json")), "a plan file only with --out (as Terraform)"
    assert "the plan was not saved (use --out PLAN)" in res.stderr

    res = meshctl(repo, "apply", "--auto-approve")
    assert res.returncode == 0, res.stderr
    assert "Apply complete: 3 node(s) updated, 3 verified by " in res.stdout
    assert "canary 0: node-1" in res.stderr  # progress on stderr, canary first
    assert "check frontend-to-database-denied" in res.stderr

    assert connect(CLUSTER, "demo/frontend", "demo/api", 3000)
    assert connect(CLUSTER, "demo/api", "demo/database", 5432)
    assert not connect(CLUSTER, "demo/frontend", "demo/database", 5432)

    res = meshctl(repo, "plan", "--detailed-exitcode")
    assert res.returncode == 0, res.stdout + res.stderr
    assert "No changes." in res.stdout
    state = json.loads((repo / "state" / "state.json").read_text())
    assert state["serial"] == 1
    assert sorted(state["nodes"]) == ["node-1", "node-2", "node-3"]
    assert not (repo / "state" / "journal.jsonl").exists()


def test_stale_saved_plan_is_refused(repo: Path) -> None:
    ensure_applied(repo)
    dns = repo / "policies" / "allow-dns.yaml"
    saved = repo.parent / "allow-dns.yaml"
    shutil.move(dns, saved)
    try:
        out = repo / "plans" / "stale.json"
        res = meshctl(repo, "plan", "--out", str(out), "--detailed-exitcode")
        assert res.returncode == 2, res.stderr
        before = observe_all(repo)
        # a hand change on node-2: delete demo/frontend's ipcache entry (10.101.1.2/32)
        subprocess.run(
            ["bpftool", "map", "delete", "pinned", f"/sys/fs/bpf/meshctl/{CLUSTER}/node-2/ipcache",
             "key", "hex", "20", "00", "00", "00", "0a", "65", "01", "02"], check=True,
        )
        res = meshctl(repo, "apply", str(out))
        assert res.returncode == 1
        assert "Saved plan is stale" in res.stderr and "node-2 changed" in res.stderr
        # what changed: the node, the component (with counts) and the exact entry, from the file
        assert "  node-2: ipcache changed (4 -> 3 entries)" in res.stderr, res.stderr
        assert "+ node-2 ipcache 10.101.1.2/32: missing on the node" in res.stderr, res.stderr
        assert "node-1:" not in res.stderr and "node-3:" not in res.stderr
        assert "Traceback" not in res.stderr
        after = observe_all(repo)
        assert after["node-1"] == before["node-1"] and after["node-3"] == before["node-3"]  # nothing applied
    finally:
        shutil.move(saved, dns)
    ensure_applied(repo)  # a fresh plan heals the hand change
    assert meshctl(repo, "plan", "--detailed-exitcode").returncode == 0


def test_tampered_or_unreadable_plan_is_refused(repo: Path) -> None:
    ensure_applied(repo)
    out = repo / "plans" / "p.json"
    assert meshctl(repo, "plan", "--out", str(out)).returncode == 0
    doc = json.loads(out.read_text())
    doc["state"]["serial"] = 99
    tampered = repo / "plans" / "tampered.json"
    tampered.write_text(json.dumps(doc))
    res = meshctl(repo, "apply", str(tampered))
    assert res.returncode == 1 and "plan_id does not match" in res.stderr
    garbage = repo / "plans" / "garbage.json"
    garbage.write_text("{not json")
    res = meshctl(repo, "apply", str(garbage))
    assert res.returncode == 1 and "not a meshctl plan file" in res.stderr
    res = meshctl(repo, "apply", str(repo / "plans" / "missing.json"))
    assert res.returncode == 1 and "cannot read the plan file" in res.stderr
    assert "Traceback" not in res.stderr


def test_second_apply_is_refused_while_locked(repo: Path) -> None:
    from meshctl.state import StateLock

    ensure_applied(repo)
    lock = StateLock(repo / "state", "apply")
    info = lock.acquire()
    try:
        res = meshctl(repo, "apply", "--auto-approve")
        assert res.returncode == 1
        assert "is locked" in res.stderr and info.id in res.stderr
    finally:
        lock.release()
    assert meshctl(repo, "apply", "--auto-approve").returncode == 0


def test_a_running_apply_is_reported_as_running_not_interrupted(repo: Path) -> None:
    """Lock held by a live process + its journal records = an apply in progress: a second apply
    and plan say who runs it since when; recover says the state is locked; --lock-timeout waits."""
    import socket
    import threading

    from meshctl.nodestate import NodeState
    from meshctl.state import Journal, StateLock

    ensure_applied(repo)
    state_dir = repo / "state"
    lock = StateLock(state_dir, "apply")
    info = lock.acquire()
    journal = Journal(state_dir, "sha256:running")
    journal.begin("node-1", NodeState("node-1"), NodeState("node-1"))
    running = f"an apply by pid {info.pid} on {socket.gethostname()} is in progress since {info.created}"
    try:
        for args in (("apply", "--auto-approve"), ("plan",), ("drift",)):
            res = meshctl(repo, *args)
            assert res.returncode == 1 and running in res.stderr, (args, res.stderr)
            assert "interrupted" not in res.stderr and "Traceback" not in res.stderr
        res = meshctl(repo, "recover")
        assert res.returncode == 1 and "is locked" in res.stderr and running in res.stderr, res.stderr

        def finish() -> None:
            journal.clear()
            lock.release()

        threading.Timer(1.0, finish).start()
        res = meshctl(repo, "plan", "--lock-timeout", "20s", "--detailed-exitcode")
        assert res.returncode == 0, res.stderr  # waited for the apply to end, then planned
    finally:
        journal.clear()
        lock.release()
    res = meshctl(repo, "plan", "--lock-timeout", "soon")
    assert res.returncode == 1 and "--lock-timeout: 'soon' is not a duration" in res.stderr


def test_unlock_forces_a_stale_lock(repo: Path) -> None:
    from meshctl.state import StateLock

    info = StateLock(repo / "state", "apply").acquire()  # never released: a crashed holder
    res = meshctl(repo, "state", "unlock", info.id)  # default --state-dir state, cwd = repo
    assert res.returncode == 0, res.stderr
    assert meshctl(repo, "apply", "--auto-approve").returncode == 0


def test_apply_without_plan_asks_first(repo: Path) -> None:
    ensure_applied(repo)
    policy = repo / "policies" / "frontend-to-api.yaml"
    original = policy.read_text()
    extra = '            - {port: "3000", protocol: TCP}\n            - {port: "8080", protocol: TCP}'
    policy.write_text(original.replace('            - {port: "3000", protocol: TCP}', extra, 1))
    try:
        state = repo / "state" / "state.json"
        serial = json.loads(state.read_text())["serial"]
        res = meshctl(repo, "apply", stdin="n\n")
        assert res.returncode == 1
        assert "Apply these changes?" in res.stderr and "Apply cancelled." in res.stdout
        assert "+ node-2 policy demo/api ingress allow demo/frontend tcp/8080" in res.stdout  # shown first
        assert json.loads(state.read_text())["serial"] == serial
        res = meshctl(repo, "apply", stdin="y\n")
        assert res.returncode == 0, res.stdout + res.stderr
        assert json.loads(state.read_text())["serial"] == serial + 1
        assert meshctl(repo, "plan", "--detailed-exitcode").returncode == 0
    finally:
        policy.write_text(original)
    ensure_applied(repo)
    assert connect(CLUSTER, "demo/frontend", "demo/api", 3000)
