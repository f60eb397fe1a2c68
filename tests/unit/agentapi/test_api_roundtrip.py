"""The agent API over a real unix socket, with an in-memory node (the kernel side is covered by
tests/privileged/test_agent_api.py): stale refusal, revert on a failed reconcile, verify, errors."""

from __future__ import annotations

import json
import shutil
import stat
import tempfile
import threading
import time
from collections.abc import Iterator
from dataclasses import dataclass
from ipaddress import IPv4Network
from pathlib import Path

import pytest

from meshctl.agentapi.client import AgentClient
from meshctl.agentapi.driver import AgentCheckRunner, AgentDriver
from meshctl.agentapi.protocol import (
    SOCKET_DIR_ENV,
    AgentApiError,
    StaleNodeError,
    WireCheck,
    counts_from_json,
    counts_to_json,
    socket_path,
)
from meshctl.agentapi.server import serve
from meshctl.agentapi.service import NodeService
from meshctl.apply.engine import ApplyEngine, NodeWork, RolloutSettings
from meshctl.apply.gates import CheckLike, CheckOutcome
from meshctl.connections import TrackedConnection
from meshctl.dataplane.dnsproxy import CachedIp, DnsFiles
from meshctl.localproc import UnixHTTPConnection
from meshctl.nodestate import PROTO_TCP, Direction, FrozenMap, IpcacheEntry, NodeState

NODE = "n1"
TARGET = NodeState(NODE, ipcache=FrozenMap({IPv4Network("10.1.0.5/32"): IpcacheEntry(300)}))
CONNS = (TrackedConnection(0x0A010005, 0x0A010006, 40000, 5432, PROTO_TCP, Direction.EGRESS),)


class MemoryNode:
    """A NodeDriver whose node is a value; `fail_on` makes reconcile to that state fail half-way."""

    def __init__(self) -> None:
        self.state = NodeState(NODE)
        self.fail_on: NodeState | None = None
        self.drops: dict[tuple[int, int, int], int] = {(2, 2, 0): 5}
        self.uninstalled = 0

    def observe(self, node: str) -> NodeState:
        return self.state

    def reconcile(self, node: str, current: NodeState, target: NodeState) -> None:
        assert current == self.state, "reconcile from a state the node is not in"
        if target == self.fail_on:
            self.state = NodeState(NODE, ipcache=FrozenMap({IPv4Network("10.9.9.9/32"): IpcacheEntry(1)}))
            raise RuntimeError("map update failed half-way")
        self.state = target

    def drop_counts(self, node: str) -> dict[tuple[int, int, int], int]:
        return dict(self.drops)

    def uninstall(self, node: str) -> NodeState:
        before, self.state = self.state, NodeState(NODE)
        self.uninstalled += 1
        return before


@dataclass
class Served:
    node: MemoryNode
    path: Path
    journal_dir: Path
    checks_run: list[CheckLike]

    @property
    def client(self) -> AgentClient:
        return AgentClient(NODE, self.path, timeout_s=10)


@pytest.fixture
def served() -> Iterator[Served]:
    base = Path(tempfile.mkdtemp(prefix="mc-go2-"))
    node, ran = MemoryNode(), []

    def runner() -> object:
        def run(check: CheckLike) -> CheckOutcome:
            ran.append(check)
            return CheckOutcome(check, "allowed" if check.port == 80 else "denied", "")
        return run

    pods = lambda: {"demo/a": object()}  # noqa: E731
    dns = DnsFiles(base / "dns")
    dns.dir.mkdir()
    dns.learned.write_text(json.dumps({"ips": {"203.0.113.10": {
        "identity": 262, "names": ["api.stripe.com"], "expires": 1_700_000_000.5}}}))
    svc = NodeService(NODE, node, base / "journal", pods, runner, sleep=lambda _s: None,
                      conntrack=lambda: CONNS, dns_files=dns)
    path, stop, ready = base / "agent.sock", threading.Event(), threading.Event()
    thread = threading.Thread(target=serve, args=(svc, path, stop), kwargs={"ready": ready}, daemon=True)
    thread.start()
    try:
        assert ready.wait(10)
        yield Served(node, path, base / "journal", ran)
    finally:
        stop.set()
        thread.join(10)
        shutil.rmtree(base, ignore_errors=True)
    assert not path.exists(), "the server removes its socket"


def test_socket_mode_and_single_owner(served: Served) -> None:
    assert stat.S_IMODE(served.path.stat().st_mode) == 0o600
    with pytest.raises(AgentApiError, match="in use"):
        serve(NodeService(NODE, MemoryNode(), served.journal_dir), served.path, threading.Event())


def test_observe_apply_stale_revert(served: Served) -> None:
    client = served.client
    before = client.observe()
    assert before == NodeState(NODE)
    with pytest.raises(StaleNodeError, match="changed since it was planned"):
        client.apply(TARGET, "sha256:stale")
    assert served.node.state == before
    answer = client.apply(TARGET, before.fingerprint(), "plan-1")
    assert answer["ok"] and answer["fingerprint"] == TARGET.fingerprint()
    assert served.node.state == TARGET
    assert not (served.journal_dir / "journal.jsonl").exists()
    client.revert(before)
    assert served.node.state == before


def test_uninstall_empties_the_node_and_answers_what_was_there(served: Served) -> None:
    client = served.client
    client.apply(TARGET, NodeState(NODE).fingerprint(), "plan-1")
    assert client.uninstall() == TARGET
    assert served.node.state == NodeState(NODE) and served.node.uninstalled == 1


def test_uninstall_waits_for_an_interrupted_apply_to_be_reverted(served: Served) -> None:
    from meshctl.state import Journal

    Journal(served.journal_dir, "plan-x").begin(NODE, NodeState(NODE), TARGET)
    with pytest.raises(AgentApiError, match="interrupted: revert it first") as err:
        served.client.uninstall()
    assert err.value.status == 409 and served.node.uninstalled == 0


def test_failed_reconcile_is_reverted_by_the_engine(served: Served) -> None:
    served.node.fail_on = TARGET
    with pytest.raises(AgentApiError, match=r"reconcile failed.*reverted it to its before-state"):
        served.client.apply(TARGET, NodeState(NODE).fingerprint())
    assert served.node.state == NodeState(NODE)
    assert not (served.journal_dir / "journal.jsonl").exists()


def test_verify_runs_checks_of_this_node_and_the_gate(served: Served) -> None:
    client = served.client
    ok = client.verify([WireCheck("a-web", "demo/a", "10.1.0.9", 80, "TCP", "allowed")], window_s=0.5,
                       threshold_per_s=0)
    assert ok["ok"] and ok["gate"]["drops"] == 0 and ok["checks"][0]["observed"] == "allowed"
    assert [c.name for c in served.checks_run] == ["a-web"]
    bad = client.verify([WireCheck("a-db", "demo/a", "10.1.0.9", 5432, "TCP", "allowed")])
    assert not bad["ok"] and bad["checks"][0]["observed"] == "denied"
    with pytest.raises(AgentApiError, match="must start at a pod of node n1: demo/b"):
        client.verify([WireCheck("b", "demo/b", "10.1.0.9", 80, "TCP", "allowed")])
    with pytest.raises(AgentApiError, match="window_s must be within"):
        client.verify(window_s=3600)
    assert client.drops() == {(2, 2, 0): 5}


def test_protocol_errors_are_json(served: Served) -> None:
    conn = UnixHTTPConnection(served.path, 5)
    try:
        conn.request("POST", "/v1/apply", body=b"{not json", headers={"Content-Type": "application/json"})
        resp = conn.getresponse()
        assert resp.status == 400 and b"not JSON" in resp.read()
    finally:
        conn.close()
    with pytest.raises(AgentApiError, match="no GET /v2/x"):
        served.client._call("GET", "/v2/x")
    with pytest.raises(AgentApiError, match="not a canonical NodeState"):
        served.client._call("POST", "/v1/revert", {"before": {"node": NODE}})


def test_engine_drives_the_node_through_the_agent_driver(served: Served, monkeypatch: pytest.MonkeyPatch
                                                          ) -> None:
    monkeypatch.setenv(SOCKET_DIR_ENV, str(served.path.parent))
    driver = AgentDriver("t-go2-unit", [NODE])
    driver.clients[NODE] = served.client  # the fixture's socket name is short, not agent-<cluster>-<node>

    class Journal:
        def __init__(self) -> None:
            self.records: list[str] = []

        def begin(self, node: str, before: NodeState, after: NodeState) -> None:
            self.records.append(f"begin {node}")

        def done(self, node: str) -> None:
            self.records.append(f"done {node}")

        def reverted(self, node: str) -> None:
            self.records.append(f"reverted {node}")

    checks = AgentCheckRunner(driver, {"demo/a": NODE}, {})
    journal = Journal()
    engine = ApplyEngine(driver, journal, checks, RolloutSettings(verify_window_s=0), sleep=lambda _s: None)
    check = WireCheck("a-web", "demo/a", "10.1.0.9", 80, "TCP", "allowed")
    result = engine.run([NodeWork(NODE, NodeState(NODE), TARGET)], [NODE], [check], {"demo/a": NODE})
    assert result.ok, result.summary()
    assert served.node.state == TARGET
    assert journal.records == [f"begin {NODE}", f"done {NODE}"]
    assert [o.observed for o in result.checks] == ["allowed"]


def test_wire_formats_round_trip(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv(SOCKET_DIR_ENV, raising=False)
    assert socket_path("c", "n") == Path("/run/meshctl/agent-c-n.sock")
    monkeypatch.setenv(SOCKET_DIR_ENV, "/srv/sock")
    assert socket_path("c", "n") == Path("/srv/sock/agent-c-n.sock")
    assert socket_path("c", "n", "/x") == Path("/x/agent-c-n.sock")
    check = WireCheck("n", "ns/a", "10.0.0.1", 80, "UDP", "denied")
    assert WireCheck.from_json(check.to_json()) == check
    with pytest.raises(ValueError, match="expect must be allowed or denied"):
        WireCheck.from_json({**check.to_json(), "expect": "maybe"})
    counts = {(2, 3, 1): 7, (1, 0, 0): 9}
    assert counts_from_json(counts_to_json(counts)) == counts


def test_interrupted_node_journal_blocks_apply_until_revert(served: Served) -> None:
    from meshctl.state import Journal

    Journal(served.journal_dir, "plan-x").begin(NODE, NodeState(NODE), TARGET)  # an agent died here
    served.node.state = TARGET
    client = served.client
    assert client.observe_raw()["interrupted"] is True
    with pytest.raises(StaleNodeError, match="interrupted"):
        client.apply(NodeState(NODE), TARGET.fingerprint())
    client.revert(NodeState(NODE))
    assert served.node.state == NodeState(NODE)
    assert client.observe_raw()["interrupted"] is False
    assert not (served.journal_dir / "journal.jsonl").exists()


def test_conntrack_rows_reach_the_plan_as_connections(served: Served) -> None:
    assert served.client.connections() == CONNS


def test_the_dns_proxys_learned_ips_are_listed_and_a_bad_clean_pattern_is_refused(served: Served) -> None:
    assert served.client.fqdn_cache() == [CachedIp("203.0.113.10", 262, ("api.stripe.com",), 1_700_000_000.5)]
    with pytest.raises(AgentApiError, match="is not a matchPattern") as err:
        served.client.fqdn_clean("api.**.com")
    assert err.value.status == 400
    with pytest.raises(AgentApiError, match="no DNS proxy runs"):  # learned IPs, but no proxy to clean them
        served.client.fqdn_clean("")



def test_the_node_keeps_its_share_of_the_state_only_at_the_shared_state(served: Served) -> None:
    from meshctl.state import State
    from meshctl.state.cluster import node_share

    client = served.client
    assert client.held_share() is None
    state = State(lineage="lin").record_apply("sha256:p", {NODE: TARGET})
    with pytest.raises(AgentApiError, match="not at the applied state") as err:
        client.record_share(node_share(state, NODE))  # the node is still empty
    assert err.value.status == 409 and client.held_share() is None
    client.apply(TARGET, NodeState(NODE).fingerprint(), "plan-1")
    client.record_share(node_share(state, NODE))
    held = client.held_share()
    assert held is not None and (held.lineage, held.serial) == ("lin", 1)
    assert held.nodes[NODE].intended == TARGET
    with pytest.raises(AgentApiError, match="not a share of node n1"):
        client.record_share(node_share(State(lineage="lin").record_apply("p", {"n2": NodeState("n2")}), "n2"))
    client.uninstall()
    assert client.held_share() is None, "uninstall drops the share"


def test_an_apply_session_locks_the_node_and_another_waits_up_to_the_lock_timeout(served: Served) -> None:
    first = AgentDriver("c", {NODE: served.path}, plan_id="p1", lease_s=30)
    first.hold([NODE])
    second = AgentDriver("c", {NODE: served.path}, plan_id="p2", lease_s=30)
    with pytest.raises(AgentApiError, match=rf"held by apply session {first.session_id} .*--lock-timeout"):
        second.hold([NODE], wait_s=0.3)
    waiter = threading.Thread(target=second.hold, args=([NODE], 10.0))
    waiter.start()
    time.sleep(0.3)
    assert waiter.is_alive(), "the second apply waits while the first holds the node"
    assert first.end_session([]) == []  # never changed: let go at the end
    waiter.join(10)
    assert not waiter.is_alive() and second.held == {NODE}
    with pytest.raises(StaleNodeError, match="held by apply session"):
        served.client.apply(TARGET, NodeState(NODE).fingerprint(), "p3")  # no session: refused
    second.end_session([])
