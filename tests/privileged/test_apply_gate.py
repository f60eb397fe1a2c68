"""The drop gate with flow agents running: drops the plan predicted pass, unexplained drops revert.

The three-tier lab runs its flow agents (as `meshctl lab up` does). The change under test
removes frontend -> api:3000, so the plan's impact predicts that connection to go FORWARDED ->
DROPPED. A background thread keeps connecting during the apply, so the verify window sees real
policy drops on node-1 (the frontend's egress). Connections the plan does not explain - to a
port that was denied all along - are unexpected drops and fail the gate.
"""

from __future__ import annotations

import re
import threading
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

import pytest
from apply_helpers import connect, flow_agents, lab_of, map_dumps, meshctl, three_tier_copy, unique_cluster

pytestmark = [pytest.mark.privileged, pytest.mark.lab]

CLUSTER = unique_cluster("t-gate")
NODES = ("node-1", "node-2", "node-3")
GATE = re.compile(r"drop gate (\S+): (\d+) drops in \S+?(?: \([^)]*\))?, (\d+) predicted, (\S+)/s unexpected")


@pytest.fixture(scope="module")
def repo(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Path]:
    root = three_tier_copy(tmp_path_factory.mktemp("gate") / "repo", CLUSTER, verify_window=1.0)
    with lab_of(root), flow_agents(root, CLUSTER, NODES):
        res = meshctl(root, "apply", "--auto-approve")
        assert res.returncode == 0, res.stdout + res.stderr
        yield root


@contextmanager
def hammer(*targets: tuple[str, str, int]) -> Iterator[list[int]]:
    """Connect (src pod, dst pod, port) over and over in a thread; yields [attempts, refused]."""
    from meshctl.lab import probe, registry

    ends = [(src, registry.pod(CLUSTER, dst).address, port) for src, dst, port in targets]
    stop = threading.Event()
    counts = [0, 0]

    def loop() -> None:
        while not stop.is_set():
            for src, ip, port in ends:
                ok = probe.connect(CLUSTER, src, ip, port, "TCP", 0.05).ok
                counts[0] += 1
                counts[1] += not ok
            stop.wait(0.01)

    thread = threading.Thread(target=loop, daemon=True)
    thread.start()
    try:
        yield counts
    finally:
        stop.set()
        thread.join(5)


@contextmanager
def cut_frontend_to_api(repo: Path) -> Iterator[None]:
    """Remove the frontend -> api:3000 policies; its check now expects denied. Restored after."""
    policy = repo / "policies" / "frontend-to-api.yaml"
    checks = repo / "checks" / "connectivity.yaml"
    saved_policy, saved_checks = policy.read_text(), checks.read_text()
    changed = saved_checks.replace("to: demo/api\n  port: 3000\n  expect: allowed",
                                   "to: demo/api\n  port: 3000\n  expect: denied")
    assert changed != saved_checks
    policy.unlink()
    checks.write_text(changed)
    try:
        yield
    finally:
        policy.write_text(saved_policy)
        checks.write_text(saved_checks)


def gates(stderr: str) -> dict[str, tuple[int, int, float]]:
    """node -> (drops, predicted, unexpected rate) of each drop gate line (the last per node)."""
    return {m[1]: (int(m[2]), int(m[3]), float(m[4])) for m in GATE.finditer(stderr)}


def test_predicted_drops_pass_the_gate(repo: Path) -> None:
    with cut_frontend_to_api(repo):
        plan = meshctl(repo, "plan", "-o", "json")
        assert '"src": "demo/frontend"' in plan.stdout and '"after": "DROPPED"' in plan.stdout
        with hammer(("demo/frontend", "demo/api", 3000)) as counts:
            res = meshctl(repo, "apply", "--auto-approve")
        assert res.returncode == 0, res.stdout + res.stderr
        print(res.stderr)  # shown with -s: the gate lines with their figures
        drops, predicted, rate = gates(res.stderr)["node-1"]
        assert drops > 0, res.stderr  # real drops happened in the window on node-1 ...
        assert predicted == drops and rate == 0.0  # ... and every one was predicted
        assert counts[1] > 0
        assert "could not be subtracted" not in res.stderr
        assert not connect(CLUSTER, "demo/frontend", "demo/api", 3000)
    res = meshctl(repo, "apply", "--auto-approve")  # put frontend -> api back
    assert res.returncode == 0, res.stdout + res.stderr
    assert connect(CLUSTER, "demo/frontend", "demo/api", 3000)


def test_unexpected_drops_fail_the_gate_and_revert(repo: Path) -> None:
    before = {n: map_dumps(CLUSTER, n) for n in NODES}
    with cut_frontend_to_api(repo):
        # frontend -> database:5432 was denied before and stays denied: the plan explains none of it
        with hammer(("demo/frontend", "demo/api", 3000), ("demo/frontend", "demo/database", 5432)):
            res = meshctl(repo, "apply", "--auto-approve")
        assert res.returncode == 1, res.stdout + res.stderr
        print(res.stderr)
        drops, predicted, rate = gates(res.stderr)["node-1"]
        assert drops > predicted and rate > 0, res.stderr
        assert "unexpected: demo/frontend -> demo/database:5432/tcp" in res.stderr
        assert "check " not in res.stderr.split("FAILED:")[-1].split(";")[0]  # the gate failed, not a check
        assert "Reverted to the exact before-state: node-1." in res.stdout
        assert "applying batch" not in res.stderr  # stopped after the canary
        for node in NODES:
            assert map_dumps(CLUSTER, node) == before[node], node
        assert connect(CLUSTER, "demo/frontend", "demo/api", 3000)
    assert meshctl(repo, "plan", "--detailed-exitcode").returncode == 0


def test_without_agents_counters_judge_and_predictions_are_not_subtracted(repo: Path) -> None:
    """Last in the module: stops the agents. The same predicted drops now fail the zero threshold."""
    from meshctl.lab import agents

    agents.stop(CLUSTER)
    before = map_dumps(CLUSTER, "node-1")
    with cut_frontend_to_api(repo):
        with hammer(("demo/frontend", "demo/api", 3000)):
            res = meshctl(repo, "apply", "--auto-approve")
        assert res.returncode == 1, res.stdout + res.stderr
        drops, predicted, _rate = gates(res.stderr)["node-1"]
        denied_probes = res.stderr.count("expected denied, observed denied: ok")
        assert drops > predicted and predicted <= denied_probes, res.stderr  # only the probes' own drops
        assert "no flow agent on node-1" in res.stderr and "could not be subtracted" in res.stderr
        assert "Reverted to the exact before-state: node-1." in res.stdout
        assert map_dumps(CLUSTER, "node-1") == before
