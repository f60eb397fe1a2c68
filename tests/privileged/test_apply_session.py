"""kill -9 of the CLI in the middle of an apply through the node agents: the nodes put themselves back.

Each node of the plan is locked by the apply's session (in node order, before it is observed)
with a lease the CLI renews. The CLI
is killed (SIGKILL, MESHCTL_TEST_CRASH_AT) right after it reconciled node-2, with node-1 (the
canary) applied and verified before: both are half-way through the rollout, node-3 untouched.
Within the lease every node's own agent reverts it to its before-state: the connection the new
policy cut works again, and a drift check against the last recorded apply is clean. Nobody runs
`recover`; no journal and no lock is left on the machine that ran the apply: the next apply runs.
"""

from __future__ import annotations

import json
import time
from collections.abc import Iterator
from pathlib import Path

import pytest
from apply_helpers import cli_lab, connect, drift_causes, lab_inventory_copy, meshctl, unique_cluster

pytestmark = [pytest.mark.privileged, pytest.mark.lab]

CLUSTER = unique_cluster("t-lease")
LEASE_S = 2.0


@pytest.fixture(scope="module")
def repo(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Path]:
    root = lab_inventory_copy(tmp_path_factory.mktemp("lease") / "repo", CLUSTER,
                              f'\n[apply]\ndriver = "agent"\nlease = {LEASE_S}\n')
    with cli_lab(root):
        yield root


def held(repo: Path) -> list[str]:
    return sorted(p.parent.name for p in (repo / "state" / "agents").glob("*/session.json"))


def test_a_killed_apply_is_reverted_by_the_nodes_within_the_lease(repo: Path) -> None:
    first = meshctl(repo, "apply", "--auto-approve", timeout=180)
    assert first.returncode == 0, first.stdout + first.stderr
    assert held(repo) == [], "a finished apply lets every node go"
    assert connect(CLUSTER, "demo/frontend", "demo/api", 3000)

    policy = repo / "policies" / "frontend-to-api.yaml"
    original = policy.read_text()
    policy.unlink()  # frontend -> api stops working
    killed = meshctl(repo, "apply", "--auto-approve", env={"MESHCTL_TEST_CRASH_AT": "reconciled:node-2"},
                     timeout=180)
    assert killed.returncode == -9, killed.stdout + killed.stderr
    progress = killed.stderr  # the rollout's progress goes to stderr
    assert "canary 0: node-1: verified" in progress and "applying batch 1: node-2" in progress, progress
    assert held(repo) == ["node-1", "node-2", "node-3"], "the apply locked every node of its plan first"
    assert not connect(CLUSTER, "demo/frontend", "demo/api", 3000)  # half-way through the rollout
    sessions = [json.loads((repo / "state" / "agents" / n / "session.json").read_text()) for n in held(repo)]
    assert all(s["deadline"] <= time.time() + LEASE_S + 1 for s in sessions)

    deadline = time.monotonic() + LEASE_S + 5
    while held(repo) and time.monotonic() < deadline:
        time.sleep(0.1)
    assert held(repo) == [], "the agents let go of the nodes once the lease ran out"
    assert connect(CLUSTER, "demo/frontend", "demo/api", 3000)  # back at the before-state
    assert not (repo / "state" / "journal.jsonl").exists() and not list((repo / "state").glob("journal*"))

    # every node is at its last recorded state: only the desired state is not applied yet
    assert drift_causes(repo) == {"node-1": {"desired"}, "node-2": {"desired"}}
    from meshctl.lab.registry import log_dir

    log = "".join((log_dir(CLUSTER) / f"agent-{n}.log").read_text() for n in ("node-1", "node-2"))
    assert log.count("went silent: reverting to its before-state") == 2

    policy.write_text(original)
    again = meshctl(repo, "apply", "--auto-approve", timeout=180)  # no `recover`, no `state unlock`
    assert again.returncode == 0 and "No changes" in again.stdout, again.stdout + again.stderr

