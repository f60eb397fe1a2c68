"""The war story end to end in a real lab: `meshctl impact` replays flows the agents recorded.

A real git repo (main = examples/production, branch database-security adds
examples/production-changes/database-security.yaml); `meshctl lab up` + `meshctl apply` of main;
real cache -> postgres connections recorded by the flow agents; then `meshctl impact --base main
--head database-security` must report those observed flows as the ones that would be DROPPED,
and name cache -> postgres:5432 FORWARDED -> DROPPED with the policy.
"""

from __future__ import annotations

import json
import re
import shutil
import subprocess
import time
from collections.abc import Iterator
from pathlib import Path

import pytest
from agent_helpers import stop_agent
from apply_helpers import MESHCTL, connect, example_copy, git_init, meshctl

pytestmark = [pytest.mark.privileged, pytest.mark.lab]

CLUSTER = "t-go2-imp"
BRANCH = "database-security"
EXAMPLES = Path(__file__).resolve().parents[2] / "examples"
CONNECTIONS = 5


def war_story(root: Path) -> Path:
    repo_dir = example_copy("production", root / "desired", CLUSTER)
    repo = git_init(repo_dir, "production: backend and cache reach postgres")
    repo.git.checkout("-b", BRANCH)
    change = EXAMPLES / "production-changes" / "database-security.yaml"
    shutil.copy(change, repo_dir / "policies" / change.name)
    repo.git.add(A=True)
    repo.index.commit("tighten database access")
    repo.git.checkout("main")
    return repo_dir


def cache_to_postgres_flows(repo: Path) -> list[object]:
    from meshctl.impact.recorded import recorded_flows

    flows, _note = recorded_flows(repo / "state", "1h")
    return [f for f in flows or () if getattr(f, "src_pod", "") == "production/cache"
            and getattr(f, "dst_pod", "") == "production/postgres" and getattr(f, "dst_port", 0) == 5432]


@pytest.fixture(scope="module")
def recorded(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Path]:
    repo = war_story(tmp_path_factory.mktemp("impactlab"))
    agents: list[subprocess.Popen[bytes]] = []
    try:
        res = meshctl(repo, "lab", "up", "-C", str(repo), timeout=120)
        assert res.returncode == 0, res.stderr
        res = meshctl(repo, "apply", "--auto-approve", timeout=120)
        assert res.returncode == 0, res.stdout + res.stderr
        for node in ("node-1", "node-3"):  # postgres's node and cache's node
            agents.append(subprocess.Popen(
                [str(MESHCTL), "agent", "--node", node, "-C", str(repo), "--metrics-port", "0", "--no-api"],
                stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL,
            ))
        deadline = time.monotonic() + 20
        while not all((repo / "state" / "flows" / f"{n}.db").exists() for n in ("node-1", "node-3")):
            assert all(a.poll() is None for a in agents), "an agent exited"
            assert time.monotonic() < deadline, "agents did not open their flow stores"
            time.sleep(0.05)
        for _ in range(CONNECTIONS):
            assert connect(CLUSTER, "production/cache", "production/postgres", 5432)
        deadline = time.monotonic() + 15
        while len(cache_to_postgres_flows(repo)) < CONNECTIONS:
            assert time.monotonic() < deadline, "cache -> postgres flows were not recorded"
            time.sleep(0.1)
        yield repo
    finally:
        for a in agents:
            stop_agent(a)
        meshctl(repo, "lab", "down", "-C", str(repo), timeout=120)


def test_impact_names_the_break_and_the_policy(recorded: Path) -> None:
    res = meshctl(recorded, "impact", "--base", "main", "--head", BRANCH, "-C", str(recorded))
    assert res.returncode == 0, res.stderr
    out = res.stdout
    print(out)  # the report a reviewer reads (pytest -s)
    assert "production/cache -> production/postgres:5432/tcp  FORWARDED -> DROPPED" in out
    assert "database-security" in out
    assert f"addresses from the running lab {CLUSTER!r}" in out
    m = re.search(r"(\d+) flows seen in the last 24h would be DROPPED", out)
    assert m, out
    assert int(m.group(1)) >= CONNECTIONS


def test_impact_json_counts_the_observed_flows(recorded: Path) -> None:
    res = meshctl(recorded, "impact", "--base", "main", "--head", BRANCH, "-C", str(recorded), "-o", "json")
    assert res.returncode == 0, res.stderr
    replay = json.loads(res.stdout)["replay"]
    assert replay["would_drop_flows"] >= CONNECTIONS
    cache = [f for f in replay["changed"] if f["src"] == "production/cache"]
    assert cache, replay
    flow = cache[0]
    assert (flow["dst"], flow["port"], flow["protocol"]) == ("production/postgres", 5432, "tcp")
    assert (flow["recorded"], flow["base"], flow["head"]) == ("FORWARDED", "FORWARDED", "DROPPED")
    assert any("database-security" in r for r in flow["head_rules"])
    # the backend is allowed by the new policy: its recorded flows (if any) do not change
    assert not [f for f in replay["changed"] if f["src"] == "production/backend"]


def test_connection_still_works_on_main(recorded: Path) -> None:
    """impact only predicts: nothing was applied, cache still reaches postgres."""
    assert connect(CLUSTER, "production/cache", "production/postgres", 5432)
