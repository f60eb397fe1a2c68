"""The flow agent on a real pinned datapath: real drops (BPF_PROG_TEST_RUN) -> ringbuf -> store.

No lab needed: meshctl.flows.loadgen pins a test node whose from_pod program drops every frame
of an egress-isolated endpoint, so each run emits one real flow event.
"""

from __future__ import annotations

import json
import os
import re
import select
import socket
import subprocess
import sys
import time
import urllib.request
from collections.abc import Iterator
from pathlib import Path

import pytest

from meshctl.flows.filters import FlowFilter
from meshctl.flows.loadgen import DST_IDENTITY, TestNode
from meshctl.flows.store import FlowStore

pytestmark = pytest.mark.privileged

CLUSTER, NODE = "t-fl-agent", "n1"
MESHCTL = str(Path(sys.executable).parent / "meshctl")


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def metric(port: int, name: str) -> float:
    text = urllib.request.urlopen(f"http://127.0.0.1:{port}/metrics", timeout=5).read().decode()
    total = 0.0
    for line in text.splitlines():
        m = re.match(rf"^{name}(\{{[^}}]*\}})? ([0-9.e+]+)$", line)
        if m:
            total += float(m.group(2))
    return total


class AgentProc:
    def __init__(self, store: Path, port: int) -> None:
        self.store, self.port = store, port
        self.proc: subprocess.Popen[bytes] | None = None

    def start(self) -> None:
        self.proc = subprocess.Popen(
            [MESHCTL, "agent", "--node", NODE, "--cluster", CLUSTER, "--store", str(self.store),
             "--metrics-port", str(self.port)], stderr=subprocess.DEVNULL)
        deadline = time.monotonic() + 15
        while not self.store.exists():  # the store is created once the ring is open
            assert self.proc.poll() is None, "agent exited"
            assert time.monotonic() < deadline, "agent did not start"
            time.sleep(0.05)

    def stop(self) -> None:
        if self.proc is not None and self.proc.poll() is None:
            self.proc.terminate()
            self.proc.wait(10)
        self.proc = None


@pytest.fixture(scope="module")
def node() -> Iterator[TestNode]:
    tn = TestNode(CLUSTER, NODE)
    try:
        yield tn.up()
    finally:
        tn.remove()


@pytest.fixture(scope="module")
def agent(node: TestNode, tmp_path_factory: pytest.TempPathFactory) -> Iterator[AgentProc]:
    a = AgentProc(tmp_path_factory.mktemp("flows") / f"{NODE}.db", free_port())
    try:
        a.start()
        yield a
    finally:
        a.stop()


def count(store: Path, **flt: object) -> int:
    with FlowStore(store, readonly=True) as s:
        return len(s.query(FlowFilter(**flt)))  # type: ignore[arg-type]


def wait_for(pred, timeout: float = 3.0) -> float:  # type: ignore[no-untyped-def]
    start = time.monotonic()
    while not pred():
        assert time.monotonic() - start < timeout, "condition not met in time"
        time.sleep(0.02)
    return time.monotonic() - start


def test_drops_are_stored_within_a_second_and_counted(node: TestNode, agent: AgentProc) -> None:
    before = count(agent.store)
    drops_before = metric(agent.port, "meshctl_drop_total")
    assert node.drop(repeat=50, dport=6000) == 2  # TC_ACT_SHOT
    took = wait_for(lambda: count(agent.store, to_ports=(6000,)) == 50, timeout=1.0)
    assert took < 1.0
    assert count(agent.store) == before + 50
    with FlowStore(agent.store, readonly=True) as s:
        (_, f), = s.query(FlowFilter(to_ports=(6000,)), last=1)
    assert (f.verdict_name, f.reason_name, f.direction_name, f.dst_identity) == (
        "DROPPED", "default deny", "egress", DST_IDENTITY)
    assert abs(f.time_ns - time.time_ns()) < 10 * 10**9  # wall clock, not boot time
    assert metric(agent.port, "meshctl_drop_total") == drops_before + 50
    wait_for(lambda: metric(agent.port, "meshctl_flow_events_stored_total") >= 50)
    time.sleep(1.2)  # let the agent compare the datapath counters once more
    assert metric(agent.port, "meshctl_flow_events_lost_total") == 0
    assert 0 < metric(agent.port, "meshctl_flow_ring_peak_fill_ratio") < 0.01  # 50 events of a 16 MiB ring


def test_restart_loses_no_stored_flows(node: TestNode, agent: AgentProc) -> None:
    node.drop(repeat=20, dport=6001)
    wait_for(lambda: count(agent.store, to_ports=(6001,)) == 20)
    total = count(agent.store)
    agent.stop()
    node.drop(repeat=5, dport=6002)  # while the agent is down: waits in the ring buffer
    agent.start()
    wait_for(lambda: count(agent.store, to_ports=(6002,)) == 5)
    assert count(agent.store) == total + 5
    assert count(agent.store, to_ports=(6001,)) == 20


def test_observe_json_and_follow(node: TestNode, agent: AgentProc) -> None:
    state = agent.store.parent.parent / "state"
    (state / "flows").mkdir(parents=True, exist_ok=True)
    link = state / "flows" / f"{NODE}.db"
    if not link.exists():
        link.symlink_to(agent.store)
    node.drop(repeat=3, dport=6003)
    wait_for(lambda: count(agent.store, to_ports=(6003,)) == 3)
    out = subprocess.run([MESHCTL, "observe", "--state-dir", str(state), "--to-port", "6003", "--verdict",
                          "DROPPED", "-o", "json"], capture_output=True, text=True, timeout=30)
    assert out.returncode == 0, out.stderr
    lines = out.stdout.splitlines()
    assert len(lines) == 3
    assert all(json.loads(line)["dst_port"] == 6003 for line in lines)

    follow = subprocess.Popen([MESHCTL, "observe", "--state-dir", str(state), "--to-port", "6004", "-f"],
                              stdout=subprocess.PIPE, stderr=subprocess.DEVNULL)
    try:
        time.sleep(1.5)  # let it start and take its position at the end of the store
        node.drop(repeat=1, dport=6004)
        assert follow.stdout is not None
        ready, _, _ = select.select([follow.stdout], [], [], 5.0)
        assert ready, "--follow printed nothing"
        line = follow.stdout.readline().decode()
        assert ":6004 (ID:40002) DROPPED (default deny" in line
    finally:
        follow.terminate()
        follow.wait(5)


def test_observe_without_store_is_one_line_error(tmp_path: Path) -> None:
    out = subprocess.run([MESHCTL, "observe", "--state-dir", str(tmp_path)], capture_output=True, text=True,
                         timeout=30, env={**os.environ})
    assert out.returncode == 1
    assert out.stderr.strip().startswith("Error: no flow stores under") and "Traceback" not in out.stderr
