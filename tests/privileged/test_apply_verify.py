"""Verification that can fail: applies broken on purpose are caught by the verify probes and the drop
gate, rolled back, and the kernel is back at its before-state.

One three-tier lab with its flow agents (so a denied probe is confirmed by the node's flow
store). The change under test is a new policy that lets kube-dns reach the frontend on 80/TCP:
only node-1 changes (both pods live there), so the canary is the only wave, and the plan's impact
has one pair that must now pass (kube-dns -> frontend:80). The apply runs in this process with the
lab's real driver wrapped so that, right after the real reconcile of node-1, something breaks:
- its endpoint entries are deleted (the node then drops everything with no-endpoint);
- the datapath loaded is a build whose pod programs drop every packet (bpf_fixtures/dropall.c);
- the frontend's freshly written policy entries are deleted from its inner map.
A fourth apply carries a check whose destination pod does not exist: a check error, not "denied".
"""

from __future__ import annotations

import json
import subprocess
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from ipaddress import IPv4Address
from pathlib import Path

import pytest
from apply_helpers import (
    bpftool_json,
    drift_causes,
    flow_agents,
    lab_of,
    map_dumps,
    meshctl,
    three_tier_copy,
    unique_cluster,
)
from bd_helpers import compile_fixture

from meshctl.apply.driver import LabDriver
from meshctl.nodestate import NodeState

pytestmark = [pytest.mark.privileged, pytest.mark.lab]

CLUSTER = unique_cluster("t-vfy")
NODES = ("node-1", "node-2", "node-3")
PINS = Path("/sys/fs/bpf/meshctl") / CLUSTER
DNS_TO_FRONTEND = """\
apiVersion: cilium.io/v2
kind: CiliumNetworkPolicy
metadata:
  name: frontend-from-dns
  namespace: demo
spec:
  endpointSelector:
    matchLabels: {app: frontend}
  ingress:
    - fromEndpoints:
        - matchLabels:
            k8s:io.kubernetes.pod.namespace: kube-system
            k8s:k8s-app: kube-dns
      toPorts:
        - ports:
            - {port: "80", protocol: TCP}
"""
# declared in the inventory but not running: the lab has no such pod, so it has no address
GHOST_POD = """\
apiVersion: v1
kind: Pod
metadata:
  name: ghost
  namespace: demo
  labels: {app: ghost}
spec:
  nodeName: node-1
  containers:
    - name: web
      image: nginx:1.27
      ports:
        - {name: http, containerPort: 80}
"""
GHOST_CHECK = """\
apiVersion: meshctl.io/v1alpha1
kind: ConnectivityCheck
metadata:
  name: frontend-to-ghost-denied
spec:
  from: demo/frontend
  to: demo/ghost
  port: 80
  expect: denied
"""


@pytest.fixture(scope="module")
def repo(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Path]:
    root = three_tier_copy(tmp_path_factory.mktemp("verify") / "repo", CLUSTER, verify_window=0.5)
    with lab_of(root), flow_agents(root, CLUSTER, NODES):
        res = meshctl(root, "apply", "--auto-approve")
        assert res.returncode == 0, res.stdout + res.stderr
        yield root


@contextmanager
def changed(repo: Path, files: dict[str, str]) -> Iterator[None]:
    """Extra files in the repo for the block (the change to apply), removed after."""
    paths = [repo / name for name in files]
    for path, text in zip(paths, files.values(), strict=True):
        path.write_text(text)
    try:
        yield
    finally:
        for path in paths:
            path.unlink()


Hook = Callable[[LabDriver, str, NodeState, NodeState], None]


class BreakingDriver(LabDriver):
    """The lab's real driver; the first reconcile of `victim` (the apply, not the revert) is
    done by `hook` instead, which does the real reconcile and then breaks the node."""

    def __init__(self, cluster: str, netns: dict[str, str], victim: str, hook: Hook) -> None:
        super().__init__(cluster, netns)
        self.victim, self.hook, self.fired = victim, hook, False

    def reconcile(self, node: str, current: NodeState, target: NodeState) -> None:
        if node == self.victim and not self.fired:
            self.fired = True
            self.hook(self, node, current, target)
            return
        super().reconcile(node, current, target)


def apply_in_process(repo: Path, monkeypatch: pytest.MonkeyPatch,
                     hook: Hook | None) -> tuple[object, list[str]]:
    """Plan and apply the repo here, with node-1's apply broken by `hook`; (outcome, event lines)."""
    from meshctl.app.apply import apply_plan
    from meshctl.app.plan import make_plan
    from meshctl.app.workspace import open_workspace

    ws = open_workspace(repo)

    def breaking(plan_id: str = "", hold: object = ()) -> LabDriver:
        if hook is None:
            return LabDriver(ws.cluster, ws.netns)
        return BreakingDriver(ws.cluster, ws.netns, "node-1", hook)

    monkeypatch.setattr(ws.backend, "driver", breaking)
    plan = make_plan(ws).plan
    assert plan.has_changes
    events: list[str] = []
    outcome = apply_plan(ws, plan, on_event=events.append)
    print("\n".join(events))
    print(outcome.result.summary())
    return outcome, events


def assert_rolled_back(repo: Path, outcome: object, before: dict[str, object]) -> None:
    result = outcome.result  # type: ignore[attr-defined]
    assert not result.ok
    assert result.reverted == ["node-1"] and not result.revert_failures and result.applied == []
    assert "Reverted to the exact before-state: node-1." in result.summary()
    for node in NODES:
        assert map_dumps(CLUSTER, node) == before[node], node
    causes = drift_causes(repo)  # nothing changed on a node: node-1 just lacks the desired state
    assert "node-1" in causes and all(c == {"desired"} for c in causes.values()), causes


def delete_all(map_ref: list[str]) -> int:
    """Delete every entry of a map (`pinned PATH` or `id N`) with bpftool; how many there were."""
    entries = bpftool_json("map", "dump", *map_ref)
    for e in entries:
        key = [str(b) for b in e["key"]]  # type: ignore[union-attr]
        subprocess.run(["bpftool", "map", "delete", *map_ref, "key", "hex",
                        *(k.removeprefix("0x") for k in key)], check=True, capture_output=True)
    return len(entries)


def test_a_verified_apply_ran_probes_that_prove_the_change(
        repo: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    with changed(repo, {"policies/frontend-from-dns.yaml": DNS_TO_FRONTEND}):
        outcome, events = apply_in_process(repo, monkeypatch, None)
        result = outcome.result  # type: ignore[attr-defined]
        assert result.ok, result.failure
        must = [o for o in result.checks if o.check.name == "must now pass"]
        assert [(o.check.from_, o.check.to, o.check.port, o.observed) for o in must] == [
            ("kube-system/kube-dns", "demo/frontend", 80, "allowed")]
        assert result.verified == {"node-1": len(result.checks)} and "node-1: verified" in "\n".join(events)
        assert result.summary().startswith("Apply complete: 1 node(s) updated, 1 verified by ")
    # taking it back: the same pair must now drop, and the drop is found in node-1's flow store
    outcome, _ = apply_in_process(repo, monkeypatch, None)
    result = outcome.result  # type: ignore[attr-defined]
    assert result.ok, result.failure
    drop = [o for o in result.checks if o.check.name == "must now drop"]
    assert [(o.check.to, o.observed) for o in drop] == [("demo/frontend", "denied")]
    assert [(d.node, d.reason, d.source) for d in drop[0].drops] == [("node-1", 2, "flows")]
    gate = result.gates[0]
    assert gate.source == "flows" and gate.drops >= 1 and gate.unexpected == 0  # the probe's own drop


def test_endpoints_deleted_after_reconcile_fail_the_node_and_revert(
        repo: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    before = {n: map_dumps(CLUSTER, n) for n in NODES}

    def vanish(driver: LabDriver, node: str, current: NodeState, target: NodeState) -> None:
        LabDriver.reconcile(driver, node, current, target)
        assert delete_all(["pinned", str(PINS / node / "endpoints")]) == 2  # frontend and kube-dns

    with changed(repo, {"policies/frontend-from-dns.yaml": DNS_TO_FRONTEND}):
        outcome, events = apply_in_process(repo, monkeypatch, vanish)
        assert_rolled_back(repo, outcome, before)
        failure = outcome.result.failure  # type: ignore[attr-defined]
        assert "ERROR" in failure and "no endpoint" in failure, failure
        gate = outcome.result.gates[0]  # type: ignore[attr-defined]
        assert not gate.ok and dict(gate.by_reason).get(6, 0) > 0, gate.describe()  # no-endpoint drops count
        assert not any(e.endswith(": verified") for e in events)


def test_a_build_that_drops_everything_fails_the_node_and_revert(
        repo: Path, monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    from meshctl.dataplane.node import NodeDatapath
    from meshctl.dataplane.reconcile import reconcile

    dropall = compile_fixture("dropall", tmp_path)
    before = {n: map_dumps(CLUSTER, n) for n in NODES}
    loaded: list[str] = []

    def broken_build(driver: LabDriver, node: str, current: NodeState, target: NodeState) -> None:
        datapath = NodeDatapath(CLUSTER, node, driver.netns[node], object_path=dropall)
        reconcile(datapath, current, target)  # the apply loads and attaches this build
        loaded.append(str(datapath.pinned_build()))

    with changed(repo, {"policies/frontend-from-dns.yaml": DNS_TO_FRONTEND}):
        normal = NodeDatapath(CLUSTER, "node-1", None).build
        outcome, _ = apply_in_process(repo, monkeypatch, broken_build)
        assert loaded and loaded[0] != normal  # the broken build really was attached
        assert_rolled_back(repo, outcome, before)
        failure = outcome.result.failure  # type: ignore[attr-defined]
        assert "must now pass" in failure and "recorded no drop" in failure, failure
        assert NodeDatapath(CLUSTER, "node-1", None).pinned_build() == normal


def test_policy_entries_corrupted_after_write_fail_the_node_and_revert(
        repo: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    from meshctl.lab import registry

    before = {n: map_dumps(CLUSTER, n) for n in NODES}
    frontend = IPv4Address(registry.pod(CLUSTER, "demo/frontend").ip)

    def corrupt(driver: LabDriver, node: str, current: NodeState, target: NodeState) -> None:
        LabDriver.reconcile(driver, node, current, target)
        endpoint_id = target.endpoints[frontend].endpoint_id
        key = [f"{b:02x}" for b in endpoint_id.to_bytes(4, "little")]
        out = subprocess.run(["bpftool", "-j", "map", "lookup", "pinned", str(PINS / node / "policy_maps"),
                              "key", "hex", *key], capture_output=True, text=True, check=True)
        value = json.loads(out.stdout)["value"]
        inner = int.from_bytes(bytes(int(b, 16) for b in value[:4]), "little") if isinstance(value, list) \
            else int(value)
        assert delete_all(["id", str(inner)]) > 0  # the frontend's allow entries, just written

    with changed(repo, {"policies/frontend-from-dns.yaml": DNS_TO_FRONTEND}):
        outcome, _ = apply_in_process(repo, monkeypatch, corrupt)
        assert_rolled_back(repo, outcome, before)
        failure = outcome.result.failure  # type: ignore[attr-defined]
        probe = "must now pass: kube-system/kube-dns -> demo/frontend:80/TCP"
        assert f"{probe} expected allowed, observed denied" in failure, failure
        assert "default deny drop on node-1" in failure


def test_a_denied_check_against_a_missing_pod_is_an_error_that_fails_the_node(
        repo: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    before = {n: map_dumps(CLUSTER, n) for n in NODES}
    files = {"policies/frontend-from-dns.yaml": DNS_TO_FRONTEND, "checks/ghost.yaml": GHOST_CHECK,
             "inventory/ghost.yaml": GHOST_POD}
    with changed(repo, files):
        outcome, _ = apply_in_process(repo, monkeypatch, None)
        assert_rolled_back(repo, outcome, before)
        failure = outcome.result.failure  # type: ignore[attr-defined]
        assert ("check frontend-to-ghost-denied: demo/frontend -> demo/ghost:80/TCP expected denied: ERROR "
                "(destination pod demo/ghost does not exist") in failure, failure
