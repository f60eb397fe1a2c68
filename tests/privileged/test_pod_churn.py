"""Pods come and go without a plan: the node agents keep endpoints, identities and ipcache in step.

The three-tier demo with `[inventory] source = "lab"`: after one apply, 20 pods are added (10
with the api's label set, 5 with a new frontend label set, 5 with a label set no policy allows)
and 10 deleted while connections run. Every new pod must connect under the applied policy within
one second of `lab pod add` returning, denied connections must stay denied, the connections that
ran throughout must never fail, the new identity must be the same number on every node, and
afterwards plan and drift must find nothing to do (the churn is listed, not planned).
"""

from __future__ import annotations

import subprocess
import threading
import time
from collections.abc import Iterator
from pathlib import Path

import pytest
from apply_helpers import cli_lab, connect, lab_inventory_copy, meshctl, observe_all, unique_cluster

pytestmark = [pytest.mark.privileged, pytest.mark.lab]

CLUSTER = unique_cluster("t-churn")
NODES = ("node-1", "node-2", "node-3")


@pytest.fixture(scope="module")
def repo(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Path]:
    root = lab_inventory_copy(tmp_path_factory.mktemp("churn") / "repo", CLUSTER)
    with cli_lab(root):
        yield root


def first_success(src: str, dst: str, port: int, within: float) -> float | None:
    """Seconds until src connects to dst:port, or None when it did not within `within`."""
    started = time.monotonic()
    while True:
        if connect(CLUSTER, src, dst, port):
            return time.monotonic() - started
        if time.monotonic() - started > within:
            return None


class Traffic:
    """Connections that run during the churn: one that must always pass, one that must never."""

    def __init__(self) -> None:
        self.stop = threading.Event()
        self.allowed: list[bool] = []
        self.denied: list[bool] = []
        self.thread = threading.Thread(target=self.run, daemon=True)

    def run(self) -> None:
        while not self.stop.is_set():
            self.allowed.append(connect(CLUSTER, "demo/frontend", "demo/api", 3000))
            self.denied.append(connect(CLUSTER, "demo/frontend", "demo/database", 5432))

    def __enter__(self) -> Traffic:
        self.thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self.stop.set()
        self.thread.join(10)


def add(repo: Path, pod: str, node: str, labels: list[str], port: str) -> None:
    args = [a for label in labels for a in ("--label", label)]
    res = meshctl(repo, "lab", "pod", "add", pod, "--node", node, *args, "--port", port)
    assert res.returncode == 0, res.stdout + res.stderr
    assert f"pod {pod} added on {node}" in res.stdout and "agents in step after" in res.stdout


def test_pods_churn_under_the_applied_policy(repo: Path) -> None:
    from meshctl.compile.identities import IdentityTable
    from meshctl.lab import inventory

    apply = meshctl(repo, "apply", "--auto-approve", timeout=180)
    assert apply.returncode == 0, apply.stdout + apply.stderr
    latencies: list[float] = []
    with Traffic() as traffic:
        for i in range(10):  # the api's label set: the existing identity
            add(repo, f"demo/api-{i}", NODES[i % 3], ["app=api", "tier=backend"], "api=3000/TCP")
            took = first_success("demo/frontend", f"demo/api-{i}", 3000, within=1.0)
            assert took is not None, f"demo/api-{i} not reachable from the frontend within 1 s"
            latencies.append(took)
            assert not connect(CLUSTER, f"demo/api-{i}", "demo/frontend", 80)  # api may not call the web
        for i in range(5):  # a new label set the frontend policies select: a new identity
            labels = ["app=frontend", "tier=web", "version=v2"]
            add(repo, f"demo/web-{i}", NODES[(i + 1) % 3], labels, "80/TCP")
            took = first_success(f"demo/web-{i}", "demo/api", 3000, within=1.0)
            assert took is not None, f"demo/web-{i} cannot reach the api within 1 s"
            latencies.append(took)
            assert not connect(CLUSTER, f"demo/web-{i}", "demo/database", 5432)
        for i in range(5):  # a label set no policy allows anything: default deny both ways
            add(repo, f"demo/batch-{i}", NODES[(i + 2) % 3], ["app=batch"], "8080/TCP")
            assert not connect(CLUSTER, f"demo/batch-{i}", "demo/api", 3000)
            assert not connect(CLUSTER, "demo/frontend", f"demo/batch-{i}", 8080)
        for pod in [*(f"demo/api-{i}" for i in range(5)), *(f"demo/web-{i}" for i in range(3)),
                    "demo/batch-0", "demo/batch-1"]:
            res = meshctl(repo, "lab", "pod", "delete", pod)
            assert res.returncode == 0, res.stdout + res.stderr
        # the survivors still connect under policy after the deletes
        assert connect(CLUSTER, "demo/frontend", "demo/api-7", 3000)
        assert connect(CLUSTER, "demo/web-4", "demo/api-9", 3000)
        assert not connect(CLUSTER, "demo/batch-4", "demo/api-9", 3000)
    assert max(latencies) < 1.0, latencies
    failed = traffic.allowed.count(False)
    assert traffic.allowed and not failed, f"{failed} of {len(traffic.allowed)} allowed connections failed"
    assert traffic.denied and not any(traffic.denied), f"{sum(traffic.denied)} denied connections passed"

    store = inventory.load(CLUSTER)
    assert store is not None and len(store.pods) == 4 + 20 - 10
    identities = IdentityTable.from_dict(store.identities)
    v2 = next(i for ls, i in identities.by_labels.items() if "k8s:version=v2" in ls)
    web4 = next(p for p in store.pods if p.key == "demo/web-4")
    seen = {}
    for node, state in observe_all(repo).items():  # every node's ipcache names web-4 by the same number
        entry = next(e for prefix, e in state.ipcache.items() if prefix.network_address == web4.pod_ip)
        seen[node] = entry.identity
    assert set(seen.values()) == {v2}, seen

    plan = meshctl(repo, "plan", "--detailed-exitcode", timeout=120)
    assert plan.returncode == 0, plan.stdout + plan.stderr
    assert "inventory: 10 pods added since the last apply" in plan.stdout
    drift = meshctl(repo, "drift", "--detailed-exitcode", timeout=120)
    assert drift.returncode == 0, drift.stdout + drift.stderr
    assert "(runtime, not drift)" in drift.stdout


def test_a_hand_made_change_is_still_drift(repo: Path) -> None:
    """The agents follow pods, not the node: an entry removed by hand stays missing and shows."""
    from meshctl.lab import registry

    victim = registry.pod(CLUSTER, "demo/api-9")
    key = ["20", "00", "00", "00", *(f"{b:02x}" for b in victim.address.packed)]
    subprocess.run(["bpftool", "map", "delete", "pinned", f"/sys/fs/bpf/meshctl/{CLUSTER}/node-1/ipcache",
                    "key", "hex", *key], check=True)
    time.sleep(0.3)  # a sync of the agents would have put it back by now; they must not
    drift = meshctl(repo, "drift", "--detailed-exitcode", timeout=120)
    assert drift.returncode == 2, drift.stdout + drift.stderr
    assert f"node-1 ipcache {victim.ip}/32: missing on the node (deleted outside meshctl)" in drift.stdout
    heal = meshctl(repo, "drift", "--heal", timeout=120)
    assert heal.returncode == 0, heal.stdout + heal.stderr
    assert meshctl(repo, "drift", "--detailed-exitcode", timeout=120).returncode == 0


def test_pod_add_errors_are_one_line(repo: Path) -> None:
    cases = [
        (["demo/api-9", "--node", "node-1"], "exists already"),
        (["nosuch/pod", "--node", "node-1"], "namespace 'nosuch' is not in the lab's inventory"),
        (["demo/x", "--node", "node-9"], "--node node-9: not a node of lab"),
        (["demo/x", "--node", "node-1", "--port", "http"], "--port 'http': expected PORT/TCP"),
        (["demo/x", "--node", "node-1", "--label", "novalue"], "--label 'novalue': expected KEY=VALUE"),
        (["x", "--node", "node-1"], "give the pod as NAMESPACE/NAME"),
    ]
    for args, message in cases:
        res = meshctl(repo, "lab", "pod", "add", *args)
        assert res.returncode == 1 and message in res.stderr, (args, res.stderr)
        assert "Traceback" not in res.stderr
    gone = meshctl(repo, "lab", "pod", "delete", "demo/nope")
    assert gone.returncode == 1 and "has no pod 'demo/nope'" in gone.stderr
