"""`meshctl lab up` starts like a cluster: every pod gets its endpoint and identity at once,
under no policy (all connect); the first plan is the policy rollout; after the first apply the
policies hold; a node that was attached before keeps failing closed when its entries are gone.

The real CLI on a three-tier copy (tests/privileged/apply_helpers.py), real connections.
"""

from __future__ import annotations

import json
from collections.abc import Iterator
from pathlib import Path

import pytest
from apply_helpers import cli_lab, connect, meshctl, three_tier_copy, unique_cluster

from meshctl.lab import datapath

pytestmark = pytest.mark.privileged

if not datapath.available():
    pytest.skip("meshctl.dataplane.node not available", allow_module_level=True)

CLUSTER = unique_cluster("t-cni")
PAIRS = [  # (src, dst, port, allowed by the example's policies)
    ("demo/frontend", "demo/api", 3000, True),
    ("demo/api", "demo/database", 5432, True),
    ("demo/frontend", "demo/database", 5432, False),
    ("demo/database", "demo/frontend", 80, False),
    ("demo/database", "demo/api", 3000, False),
]


@pytest.fixture(scope="module")
def repo(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Path]:
    root = three_tier_copy(tmp_path_factory.mktemp("cni") / "repo", CLUSTER)
    with cli_lab(root):
        yield root


def _plan_json(repo: Path) -> dict[str, object]:
    out = meshctl(repo, "plan", "-o", "json")
    assert out.returncode == 0, out.stderr
    return json.loads(out.stdout)


def test_lab_up_alone_every_pod_connects(repo: Path) -> None:
    for src, dst, port, _ in PAIRS:
        assert connect(CLUSTER, src, dst, port), f"{src} -> {dst}:{port} dropped before any apply"


def test_first_plan_is_the_policy_rollout_then_policies_hold(repo: Path) -> None:
    plan = _plan_json(repo)
    changes = [c for n in plan["nodes"] for c in n["resource_changes"]]  # type: ignore[union-attr]
    kinds = {(c["type"], tuple(c["change"]["actions"])) for c in changes}
    # identities, peers and endpoint ids were programmed by lab up: only enforcement and policy move
    assert kinds == {("endpoint", ("update",)), ("policy", ("create",))}, kinds
    for c in changes:
        if c["type"] == "endpoint":
            before, after = c["change"]["before"], c["change"]["after"]
            assert {k for k in before if before[k] != after[k]} <= {"enforce_ingress", "enforce_egress"}

    out = meshctl(repo, "apply", "--auto-approve", timeout=180)
    assert out.returncode == 0, out.stdout + out.stderr
    for src, dst, port, allowed in PAIRS:
        assert connect(CLUSTER, src, dst, port) is allowed, f"{src} -> {dst}:{port}"

    again = meshctl(repo, "lab", "up", timeout=120)  # nodes attached before: left as they are
    assert again.returncode == 0, again.stderr
    assert "endpoints programmed" not in again.stderr
    for src, dst, port, allowed in PAIRS:
        assert connect(CLUSTER, src, dst, port) is allowed, f"{src} -> {dst}:{port} after lab up again"


def test_attached_node_that_lost_its_entries_stays_closed(repo: Path) -> None:
    from meshctl.dataplane.maps import EndpointsMap
    from meshctl.dataplane.node import node_pin_dir
    from meshctl.dataplane.policy_rev import bump_revision
    from meshctl.lab import registry

    db = registry.pod(CLUSTER, "demo/database")
    pins = node_pin_dir(CLUSTER, db.node)
    with EndpointsMap.from_dir(pins) as m:
        m.remove([db.address])
    bump_revision(pins)
    up = meshctl(repo, "lab", "up", timeout=120)
    assert up.returncode == 0, up.stderr
    assert not connect(CLUSTER, "demo/api", "demo/database", 5432), "lab up opened an attached node"

    plan = _plan_json(repo)
    creates = [c["address"] for n in plan["nodes"] for c in n["resource_changes"]  # type: ignore[union-attr]
               if c["type"] == "endpoint" and c["change"]["actions"] == ["create"]]
    assert creates == [f"{db.node} endpoint demo/database"], creates
    out = meshctl(repo, "apply", "--auto-approve", timeout=180)
    assert out.returncode == 0, out.stdout + out.stderr
    assert connect(CLUSTER, "demo/api", "demo/database", 5432)


def _add_pod(repo: Path, name: str, node: str, port: int) -> None:
    with open(repo / "inventory" / "pods.yaml", "a") as f:
        f.write(f"---\napiVersion: v1\nkind: Pod\nmetadata:\n  name: {name}\n  namespace: demo\n"
                f"  labels: {{app: {name}}}\nspec:\n  nodeName: {node}\n  containers:\n"
                f"    - name: main\n      image: busybox\n      ports:\n"
                f"        - {{containerPort: {port}}}\n")


def test_pods_added_later_join_open_unless_the_node_lost_its_state(tmp_path: Path) -> None:
    from meshctl.dataplane.maps import EndpointsMap
    from meshctl.dataplane.node import node_pin_dir
    from meshctl.dataplane.policy_rev import bump_revision
    from meshctl.lab import registry

    cluster = unique_cluster("t-cni2")
    root = three_tier_copy(tmp_path / "repo", cluster)
    with cli_lab(root):
        _add_pod(root, "worker", "node-2", 8080)  # node-2 attached, no apply: no policy in force
        up = meshctl(root, "lab", "up", timeout=120)
        assert up.returncode == 0, up.stderr
        assert "1 pod endpoints programmed" in up.stderr, up.stderr
        assert connect(cluster, "demo/frontend", "demo/worker", 8080)
        assert connect(cluster, "demo/worker", "demo/database", 5432)

        fe = registry.pod(cluster, "demo/frontend")  # node-1 loses an endpoint: not intact
        pins = node_pin_dir(cluster, fe.node)
        with EndpointsMap.from_dir(pins) as m:
            m.remove([fe.address])
        bump_revision(pins)
        _add_pod(root, "worker2", "node-1", 8081)
        up = meshctl(root, "lab", "up", timeout=120)
        assert up.returncode == 0, up.stderr
        assert "pod endpoints programmed" not in up.stderr
        assert not connect(cluster, "demo/worker2", "demo/api", 3000), "opened a node that lost its state"
        assert not connect(cluster, "demo/frontend", "demo/api", 3000)
        assert connect(cluster, "demo/api", "demo/database", 5432)  # the intact nodes are untouched
