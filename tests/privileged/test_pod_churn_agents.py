"""Pod churn with `[apply] driver = "agent"`: the intent reaches each node through its agent's API.

The apply hands every node its intent with POST /v1/intent (refused unless the node is at the
applied state); the agent keeps it and follows the lab's pods under it, so a pod added after
the apply connects under policy, and plan and drift find nothing to do.
"""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import pytest
from apply_helpers import cli_lab, connect, lab_inventory_copy, meshctl, unique_cluster

pytestmark = [pytest.mark.privileged, pytest.mark.lab]

CLUSTER = unique_cluster("t-churn-ag")


@pytest.fixture(scope="module")
def repo(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Path]:
    root = lab_inventory_copy(tmp_path_factory.mktemp("churn-ag") / "repo", CLUSTER,
                              '\n[apply]\ndriver = "agent"\n')
    with cli_lab(root):
        yield root


def test_the_agents_hold_the_intent_and_follow_pods(repo: Path) -> None:
    from meshctl.agentapi.client import AgentClient
    from meshctl.agentapi.protocol import AgentApiError, socket_path
    from meshctl.compile.intent import NodeIntent

    apply = meshctl(repo, "apply", "--auto-approve", timeout=180)
    assert apply.returncode == 0, apply.stdout + apply.stderr
    client = AgentClient("node-2", socket_path(CLUSTER, "node-2"))
    held = client.held_intent()
    assert held is not None and held.plan_id.startswith("sha256:")
    assert {d.name for d in held.policies} >= {"api-from-frontend", "default-deny"}
    with pytest.raises(AgentApiError, match="is not at the applied state"):  # never for another state
        client.record_intent(NodeIntent.from_json(held.to_json()), "sha256:" + "0" * 64)

    res = meshctl(repo, "lab", "pod", "add", "demo/api-2", "--node", "node-3", "-l", "app=api",
                  "-l", "tier=backend", "-p", "api=3000/TCP")
    assert res.returncode == 0, res.stdout + res.stderr
    assert connect(CLUSTER, "demo/frontend", "demo/api-2", 3000)
    assert not connect(CLUSTER, "demo/api-2", "demo/frontend", 80)
    plan = meshctl(repo, "plan", "--detailed-exitcode", timeout=120)
    assert plan.returncode == 0, plan.stdout + plan.stderr
    assert "inventory: 1 pod added since the last apply" in plan.stdout
    drift = meshctl(repo, "drift", "--detailed-exitcode", timeout=120)
    assert drift.returncode == 0, drift.stdout + drift.stderr
