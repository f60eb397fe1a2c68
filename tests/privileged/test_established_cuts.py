"""Policy applies to established connections, and the plan says which it will cut (issue 11, part 3).

A long-lived TCP stream frontend -> api:7000 (a policy of the test allows that port) keeps
sending. A change that removes its allow, and later one that adds a deny, is planned with
"cuts 1 established connection demo/frontend -> demo/api:7000/tcp" (text, JSON, markdown), and
the stream stops within the apply: the receiver gets nothing more and the sender's data stays
unacknowledged. Re-allowing lets the very same connection continue (its conntrack entry was kept).

The test copy raises the drop-rate threshold: the cut stream's retransmissions are drops the
apply's drop gate would otherwise count against the node (port 7000 is no declared container
port, so the connectivity impact does not predict them).
"""

from __future__ import annotations

import fcntl
import json
import shutil
import socket
import struct
import tempfile
import termios
import threading
import time
from collections.abc import Iterator
from ipaddress import IPv4Address
from pathlib import Path

import pytest
from agent_helpers import start_agent, stop_agent
from apply_helpers import lab_of, meshctl, three_tier_copy, unique_cluster

from meshctl.nodestate import PROTO_TCP, Direction

pytestmark = [pytest.mark.privileged, pytest.mark.lab]

CLUSTER = unique_cluster("t-cut")
PORT = 7000
CUT_LINE = f"cuts 1 established connection demo/frontend -> demo/api:{PORT}/tcp"

STREAM_ALLOW = f"""\
apiVersion: cilium.io/v2
kind: CiliumNetworkPolicy
metadata:
  name: frontend-stream-to-api
  namespace: demo
spec:
  endpointSelector:
    matchLabels: {{app: frontend}}
  egress:
    - toEndpoints:
        - matchLabels: {{app: api}}
      toPorts:
        - ports:
            - {{port: "{PORT}", protocol: TCP}}
"""
STREAM_INGRESS = f"""\
apiVersion: cilium.io/v2
kind: CiliumNetworkPolicy
metadata:
  name: api-stream-from-frontend
  namespace: demo
spec:
  endpointSelector:
    matchLabels: {{app: api}}
  ingress:
    - fromEndpoints:
        - matchLabels: {{app: frontend}}
      toPorts:
        - ports:
            - {{port: "{PORT}", protocol: TCP}}
"""
STREAM_DENY = f"""\
apiVersion: cilium.io/v2
kind: CiliumNetworkPolicy
metadata:
  name: api-stream-deny
  namespace: demo
spec:
  endpointSelector:
    matchLabels: {{app: api}}
  ingressDeny:
    - fromEndpoints:
        - matchLabels: {{app: frontend}}
      toPorts:
        - ports:
            - {{port: "{PORT}", protocol: TCP}}
"""


class Stream:
    """A TCP connection from one lab pod to another that keeps sending 1 KiB every 20 ms.

    Both sockets are made inside the pods' netns (setns on this thread, then back), so their
    packets cross the pods' veths and the datapath like any pod traffic."""

    def __init__(self, cluster: str, src: str, dst: str, port: int) -> None:
        from meshctl.lab import registry
        from meshctl.lab.netns import entered

        server = registry.pod(cluster, dst)
        with entered(server.netns):
            self.listener = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
        self.listener.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        self.listener.bind(("0.0.0.0", port))
        self.listener.listen(1)
        self.listener.settimeout(5)
        with entered(registry.pod(cluster, src).netns):
            self.sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
        self.sock.settimeout(5)
        self.sock.connect((str(server.address), port))
        self.conn, _ = self.listener.accept()
        self.conn.settimeout(0.1)
        self.received = 0
        self.stop = threading.Event()
        self.threads = [threading.Thread(target=self._receive, daemon=True),
                        threading.Thread(target=self._send, daemon=True)]
        for t in self.threads:
            t.start()

    def _receive(self) -> None:
        while not self.stop.is_set():
            try:
                data = self.conn.recv(65536)
            except TimeoutError:
                continue
            except OSError:
                return
            if not data:
                return
            self.received += len(data)

    def _send(self) -> None:
        chunk = b"x" * 1024
        while not self.stop.is_set():
            try:
                self.sock.send(chunk, socket.MSG_DONTWAIT)
            except BlockingIOError:
                pass  # send buffer full: the peer acknowledges nothing
            except OSError:
                return
            time.sleep(0.02)

    def unacked(self) -> int:
        """Bytes the sender wrote that the receiver has not acknowledged (SIOCOUTQ)."""
        buf = fcntl.ioctl(self.sock.fileno(), termios.TIOCOUTQ, struct.pack("i", 0))
        return int(struct.unpack("i", buf)[0])

    def flowing(self, timeout: float = 5.0) -> bool:
        start = self.received
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if self.received >= start + 4096:
                return True
            time.sleep(0.05)
        return False

    def stalled(self, window: float = 1.5) -> bool:
        """Nothing arrives for `window` seconds while the sender keeps writing."""
        start = self.received
        time.sleep(window)
        return self.received == start

    def close(self) -> None:
        self.stop.set()
        for t in self.threads:
            t.join(2)
        for s in (self.sock, self.conn, self.listener):
            s.close()


@pytest.fixture(scope="module")
def repo(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Path]:
    root = three_tier_copy(tmp_path_factory.mktemp("cuts") / "repo", CLUSTER)
    toml = root / "meshctl.toml"
    toml.write_text(toml.read_text().replace("dropRateThreshold = 0", "dropRateThreshold = 1000000"))
    (root / "policies" / "stream.yaml").write_text(STREAM_ALLOW)
    (root / "policies" / "stream-ingress.yaml").write_text(STREAM_INGRESS)
    with lab_of(root):
        res = meshctl(root, "apply", "--auto-approve", timeout=180)
        assert res.returncode == 0, res.stdout + res.stderr
        yield root


@pytest.fixture
def stream(repo: Path) -> Iterator[Stream]:
    s = Stream(CLUSTER, "demo/frontend", "demo/api", PORT)
    try:
        assert s.flowing(), "the stream does not flow while its policy allows it"
        yield s
    finally:
        s.close()


def plan_outputs(repo: Path) -> tuple[str, dict, str]:  # type: ignore[type-arg]
    text = meshctl(repo, "plan", timeout=120)
    assert text.returncode == 0, text.stderr
    js = meshctl(repo, "plan", "-o", "json", timeout=120)
    assert js.returncode == 0, js.stderr
    md = meshctl(repo, "plan", "-o", "markdown", timeout=120)
    assert md.returncode == 0, md.stderr
    return text.stdout, json.loads(js.stdout), md.stdout


def change_block(text: str, address: str) -> list[str]:
    """The lines under one change of a text plan (its values, reasons and cuts)."""
    lines = text.splitlines()
    start = next(i for i, line in enumerate(lines)
                 if line.strip().endswith(f" {address}") and line.strip()[0] in "+~-")
    block = []
    for line in lines[start + 1:]:
        if not line.startswith(" " * 8):
            break
        block.append(line.strip())
    return block


def assert_planned_cut(repo: Path, change: str) -> None:
    """Text, JSON and markdown all say the plan cuts the stream, under `change`."""
    text, doc, md = plan_outputs(repo)
    assert f"  {CUT_LINE}\n      by {change}\n" in text, text  # the impact section's summary
    assert f"! {CUT_LINE}" in change_block(text, change), text  # under the change that cuts it
    assert doc["cuts"] == [{"src": "demo/frontend", "dst": "demo/api", "protocol": "tcp", "port": PORT,
                            "count": 1, "changes": [change]}], doc["cuts"]
    assert f"- ⛔ {CUT_LINE} (by `{change}`)" in md and f"     {CUT_LINE}" in md, md


def apply(repo: Path) -> None:
    res = meshctl(repo, "apply", "--auto-approve", timeout=180)
    assert res.returncode == 0, res.stdout + res.stderr


def test_removing_the_allow_is_planned_as_a_cut_and_stops_the_stream(repo: Path, stream: Stream) -> None:
    (repo / "policies" / "stream-ingress.yaml").unlink()
    try:
        assert_planned_cut(repo, "node-2 policy demo/api ingress allow demo/frontend tcp/7000")
        apply(repo)
        assert stream.stalled(), "the stream still flows after the apply removed its allow"
        assert stream.unacked() > 0, "the sender's data is acknowledged although it never arrives"
    finally:
        (repo / "policies" / "stream-ingress.yaml").write_text(STREAM_INGRESS)
    apply(repo)  # allowed again: the same connection (its entry was kept) carries on
    assert stream.flowing(timeout=20), "the re-allowed connection did not resume"


def test_adding_a_deny_is_planned_as_a_cut_and_stops_the_stream(repo: Path, stream: Stream) -> None:
    (repo / "policies" / "stream-deny.yaml").write_text(STREAM_DENY)
    try:
        assert_planned_cut(repo, "node-2 policy demo/api ingress deny demo/frontend tcp/7000")
        apply(repo)
        assert stream.stalled(), "the stream still flows after the apply added a deny"
        assert stream.unacked() > 0
    finally:
        (repo / "policies" / "stream-deny.yaml").unlink()
        apply(repo)


def test_a_plan_that_cuts_nothing_says_nothing(repo: Path, stream: Stream) -> None:
    text, doc, md = plan_outputs(repo)
    assert doc["cuts"] == [] and "established connection" not in text + md


def test_the_agent_driver_reads_conntrack_through_the_agents(repo: Path, stream: Stream) -> None:
    """With `[apply] driver = "agent"` the plan gets each node's connections from its agent."""
    from meshctl.agentapi.client import AgentClient
    from meshctl.agentapi.protocol import socket_path
    from meshctl.lab import registry

    sockets = Path(tempfile.mkdtemp(prefix="mc-cut-", dir="/tmp"))  # short: sun_path is 108 bytes
    toml = repo / "meshctl.toml"
    lab_toml = toml.read_text()
    procs = []
    try:
        procs = [start_agent(repo, CLUSTER, node, sockets) for node in ("node-1", "node-2", "node-3")]
        toml.write_text(lab_toml + f'\n[apply]\ndriver = "agent"\nsocketDir = "{sockets}"\n'
                        '[inventory]\nsource = "lab"\n')
        frontend = int(registry.pod(CLUSTER, "demo/frontend").address)
        api = int(registry.pod(CLUSTER, "demo/api").address)
        live = AgentClient("node-2", socket_path(CLUSTER, "node-2", sockets)).connections()
        mine = [c for c in live if (c.saddr, c.daddr, c.dport) == (frontend, api, PORT)]
        assert [(c.protocol, c.direction, c.local) for c in mine] == [
            (PROTO_TCP, Direction.INGRESS, IPv4Address(api))]
        (repo / "policies" / "stream-ingress.yaml").unlink()
        try:
            assert_planned_cut(repo, "node-2 policy demo/api ingress allow demo/frontend tcp/7000")
        finally:
            (repo / "policies" / "stream-ingress.yaml").write_text(STREAM_INGRESS)
    finally:
        toml.write_text(lab_toml)
        for proc in procs:
            stop_agent(proc)
        shutil.rmtree(sockets, ignore_errors=True)

