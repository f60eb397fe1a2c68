"""kill -9 during apply at many points, then recover: no node is left half-applied.

Each round applies a saved plan that toggles allow-dns 53/TCP (a change on every node), in a
subprocess that dies by SIGKILL at a named step (MESHCTL_TEST_CRASH_AT) or at a random time.
Then: plan refuses ("an apply was interrupted"), recover runs, and every node observes as
exactly its before-state or exactly its after-state.
"""

from __future__ import annotations

import random
import re
import signal
import subprocess
import time
from collections.abc import Iterator
from pathlib import Path

import pytest
from apply_helpers import MESHCTL, drift_causes, lab_of, meshctl, observe_all, three_tier_copy, unique_cluster

from meshctl.nodestate import NodeState

pytestmark = [pytest.mark.privileged, pytest.mark.lab]

CLUSTER = unique_cluster("t-ap-rec")
NODES = ("node-1", "node-2", "node-3")


@pytest.fixture(scope="module")
def repo(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Path]:
    root = three_tier_copy(tmp_path_factory.mktemp("recover") / "repo", CLUSTER, verify_window=0.02)
    with lab_of(root):
        yield root


def toggle_dns_tcp(repo: Path) -> None:
    """Flip allow-dns between the example (53/UDP+TCP) and 53/UDP only."""
    path = repo / "policies" / "allow-dns.yaml"
    original = repo / "allow-dns.original"
    if not original.exists():
        original.write_text(path.read_text())
    text = original.read_text()
    if path.read_text() == text:
        text = re.sub(r"\n\s*- port: \"53\"\n\s*protocol: TCP", "", text)
    path.write_text(text)


def save_plan(repo: Path) -> tuple[Path, dict[str, NodeState]]:
    """A plan for the toggled repo, and each node's exact target."""
    from meshctl.app.plan import make_plan, save_plan
    from meshctl.app.workspace import open_workspace

    # A recovered round may have kept either side, so the first toggle can match what the nodes
    # already hold: then the second one is the change.
    for _ in range(2):
        toggle_dns_tcp(repo)
        ws = open_workspace(repo)
        plan = make_plan(ws).plan
        if plan.has_changes:
            break
    assert plan.has_changes
    return save_plan(ws, plan, repo / "plans" / "round.json"), {n.node: n.intended for n in plan.nodes}


def recover_and_check(repo: Path, before: dict[str, NodeState], after: dict[str, NodeState]) -> list[str]:
    """Run recover in-process; every node must be wholly before or wholly after. Returns sides."""
    from meshctl.app.recover import recover
    from meshctl.app.workspace import ensure_not_interrupted, open_workspace
    from meshctl.errors import StateError

    ws = open_workspace(repo)
    journal = repo / "state" / "journal.jsonl"
    if journal.exists():
        with pytest.raises(StateError, match="an apply was interrupted: run `meshctl recover`"):
            ensure_not_interrupted(ws.state_dir)
    recover(ws)
    assert not journal.exists()
    assert not (repo / "state" / "lock.json").exists()
    now = observe_all(repo)
    sides = []
    for node in NODES:
        assert now[node] in (before[node], after[node]), f"{node} is half-applied"
        sides.append("after" if now[node] == after[node] and before[node] != after[node] else "before")
    return sides


@pytest.mark.parametrize(
    ("step", "expect"),
    [
        ("begin:node-1", ["before"] * 3),
        ("reconciled:node-1", ["before"] * 3),
        ("gated:0", ["before"] * 3),
        ("verified:0", ["after", "before", "before"]),
        ("begin:node-2", ["after", "before", "before"]),
        ("reconciled:node-3", ["after", "after", "before"]),
        ("commit", ["after"] * 3),
        ("committed", ["after"] * 3),
    ],
)
def test_kill_at_step_then_recover(repo: Path, step: str, expect: list[str]) -> None:
    before = observe_all(repo)
    plan_path, after = save_plan(repo)
    res = meshctl(repo, "apply", str(plan_path), env={"MESHCTL_TEST_CRASH_AT": step})
    assert res.returncode == -signal.SIGKILL, res.stdout + res.stderr
    assert recover_and_check(repo, before, after) == expect
    # whatever was kept is in the state: drift finds nothing changed on the nodes, only the
    # desired state not applied yet where the node went back
    causes = drift_causes(repo)
    assert all(c == {"desired"} for c in causes.values()), causes
    assert sorted(causes) == [f"node-{i}" for i, e in enumerate(expect, 1) if e == "before"]


def test_cli_refuses_then_recover_cli(repo: Path) -> None:
    before = observe_all(repo)
    plan_path, after = save_plan(repo)
    res = meshctl(repo, "apply", str(plan_path), env={"MESHCTL_TEST_CRASH_AT": "reconciled:node-2"})
    assert res.returncode == -signal.SIGKILL
    for args in (("plan",), ("apply", "--auto-approve")):
        res = meshctl(repo, *args)
        assert res.returncode == 1
        assert "an apply was interrupted: run `meshctl recover`" in res.stderr
    res = meshctl(repo, "recover")
    assert res.returncode == 0, res.stderr
    assert "Reverted to the before-state: node-2." in res.stdout
    assert "Took over the lock" in res.stdout
    now = observe_all(repo)
    assert now["node-1"] == after["node-1"] and now["node-2"] == before["node-2"]
    assert meshctl(repo, "recover").stdout.startswith("Nothing to recover")


@pytest.mark.parametrize("seed", [1, 2, 3, 4])
def test_random_kill_then_recover(repo: Path, seed: int) -> None:
    before = observe_all(repo)
    plan_path, after = save_plan(repo)
    proc = subprocess.Popen([str(MESHCTL), "apply", str(plan_path)], cwd=repo,
                            stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    time.sleep(random.Random(seed).uniform(0.4, 1.4))  # startup is ~0.4 s, an apply ~0.4 s more
    proc.send_signal(signal.SIGKILL)
    proc.wait()
    recover_and_check(repo, before, after)
