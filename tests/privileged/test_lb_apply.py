"""kube-proxy replacement end to end through the REAL CLI: lab up, plan, apply, plan again.

examples/services is copied under a cluster name of its own (t-lb2-<pid>): three api backends
(node-1..node-3), a client on node-1, a ClusterIP (TCP 80 and UDP 5353), a NodePort and a
LoadBalancer service, plus one test-only ClusterIP (10.96.0.20:7000) in front of echo servers
this module starts in the api pods, to hold a TCP connection open across applies.

The tests run in file order on one lab: snat+random, then dsr (a replace that flushes the flow
state), then Maglev (another replace), then a backend removal. External connections reuse the
same client source ports in every phase, so a flow entry left over from the previous setting
would show (SNAT replies through node-1 in dsr mode, random picks under Maglev).
"""

from __future__ import annotations

import re
import shutil
import signal
import socket
import struct
import subprocess
import sys
from collections import Counter
from collections.abc import Iterator
from dataclasses import dataclass, field
from ipaddress import IPv4Address
from pathlib import Path

import pytest
from apply_helpers import MESHCTL, REPO, meshctl, unique_cluster
from lb_helpers import ReplyTap

from meshctl.lab import datapath, registry
from meshctl.lab.netns import entered

pytestmark = pytest.mark.privileged

if not datapath.available():
    pytest.skip("meshctl.dataplane.node not available", allow_module_level=True)

from meshctl.dataplane import lb_maps  # noqa: E402
from meshctl.dataplane import structs as S  # noqa: E402
from meshctl.dataplane.node import NodeDatapath  # noqa: E402
from meshctl.nodestate import PROTO_UDP, LbFrontend  # noqa: E402
from meshctl.observe import observe_node  # noqa: E402

EXAMPLE = REPO / "examples" / "services"
CLUSTER = unique_cluster("t-lb2")
VIP, LB_IP, STREAM_VIP = "10.96.0.10", "192.0.2.50", "10.96.0.20"
API = ("demo/api-1", "demo/api-2", "demo/api-3")
EXT_PORTS = range(41000, 41012)  # the external client's source ports, the same in every phase
UDP_PORTS = range(42000, 42060)  # the client pod's UDP source ports to the ClusterIP
MAGLEV_PORTS = range(43000, 43300)

STREAM = """\
apiVersion: v1
kind: Service
metadata: {name: api-stream, namespace: demo}
spec:
  clusterIP: 10.96.0.20
  selector: {app: api}
  ports: [{port: 7000, targetPort: 7000}]
---
apiVersion: cilium.io/v2
kind: CiliumNetworkPolicy
metadata: {name: stream, namespace: demo}
spec:
  endpointSelector: {matchLabels: {app: api}}
  ingress:
    - fromEndpoints: [{matchLabels: {app: client}}]
      toPorts: [{ports: [{port: "7000", protocol: TCP}]}]
---
apiVersion: cilium.io/v2
kind: CiliumNetworkPolicy
metadata: {name: stream-out, namespace: demo}
spec:
  endpointSelector: {matchLabels: {app: client}}
  egress:
    - toEndpoints: [{matchLabels: {app: api}}]
      toPorts: [{ports: [{port: "7000", protocol: TCP}]}]
"""

# A line echo server answering "<pod> <line>", one thread per connection (started by pid).
ECHO = """
import socket, sys, threading
name = sys.argv[1]
srv = socket.socket(); srv.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
srv.bind(("0.0.0.0", 7000)); srv.listen(64)
print("ready", flush=True)
def serve(c):
    f = c.makefile("rwb")
    for line in f:
        f.write(name.encode() + b" " + line); f.flush()
while True:
    c, _ = srv.accept()
    threading.Thread(target=serve, args=(c,), daemon=True).start()
"""


@dataclass
class Env:
    repo: Path
    echo: list[subprocess.Popen[bytes]] = field(default_factory=list)

    def cli(self, *args: str) -> subprocess.CompletedProcess[str]:
        return meshctl(self.repo, *args, timeout=120)

    def node_ip(self, node: str) -> str:
        return registry.require(CLUSTER).nodes[node].underlay_ip

    def set_setting(self, key: str, value: str) -> None:
        toml = self.repo / "meshctl.toml"
        toml.write_text(re.sub(rf'(?m)^{key} = .*$', f'{key} = "{value}"', toml.read_text()))

    def apply_and_converge(self) -> str:
        """plan (changes: exit 2), apply, then plan --detailed-exitcode exits 0; the plan text."""
        plan = self.cli("plan", "--detailed-exitcode")
        assert plan.returncode == 2, plan.stdout + plan.stderr
        applied = self.cli("apply", "--auto-approve")
        assert applied.returncode == 0, applied.stdout + applied.stderr
        again = self.cli("plan", "--detailed-exitcode")
        assert again.returncode == 0, again.stdout + again.stderr
        return plan.stdout


@pytest.fixture(scope="module")
def env(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Env]:
    repo = tmp_path_factory.mktemp("lb2") / "services"
    shutil.copytree(EXAMPLE, repo, ignore=shutil.ignore_patterns("state", "plans"))
    toml = repo / "meshctl.toml"
    text = re.sub(r'(?m)^name = "services"', f'name = "{CLUSTER}"', toml.read_text())
    toml.write_text(re.sub(r"(?m)^verifyWindow = .*$", "verifyWindow = 0.05", text))
    (repo / "services" / "stream.yaml").write_text(STREAM)
    e = Env(repo)
    try:
        up = e.cli("lab", "up")
        assert up.returncode == 0, up.stdout + up.stderr
        for pod in API:
            netns = registry.pod(CLUSTER, pod).netns
            proc = subprocess.Popen(["nsenter", f"--net=/run/netns/{netns}", sys.executable, "-c", ECHO, pod],
                                    stdout=subprocess.PIPE)
            e.echo.append(proc)
            assert proc.stdout is not None and proc.stdout.readline() == b"ready\n"
        yield e
    finally:
        for proc in e.echo:
            proc.send_signal(signal.SIGTERM)
            proc.wait(5)
        subprocess.run([str(MESHCTL), "lab", "down", "-C", str(repo)], capture_output=True, timeout=120)


# ---------------------------------------------------------------- connections


def who(reply: str) -> str:
    """'demo/api-2:3000' or 'demo/api-2:5353 probe' -> 'demo/api-2'."""
    return reply.split()[0].rsplit(":", 1)[0]


def tcp_from(netns: str, dst: str, port: int, sport: int = 0) -> str:
    """Connect (from `sport` when given), read the server's line, close with RST (no TIME_WAIT,
    so the same source port is usable again at once)."""
    with entered(netns):
        s = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
    try:
        s.settimeout(1.0)
        s.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        s.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, struct.pack("ii", 1, 0))
        if sport:
            s.bind(("0.0.0.0", sport))
        s.connect((dst, port))
        data = b""
        while not data.endswith(b"\n"):
            chunk = s.recv(256)
            if not chunk:
                break
            data += chunk
        return data.decode().strip()
    except OSError as err:
        return f"ERROR {err}"
    finally:
        s.close()


def udp_from(netns: str, dst: str, port: int, sports: range) -> dict[int, str]:
    """source port -> backend pod that echoed one datagram of that flow."""
    out = {}
    for sport in sports:
        with entered(netns):
            s = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
        try:
            s.settimeout(1.0)
            s.bind(("0.0.0.0", sport))
            s.connect((dst, port))
            s.send(b"probe")
            out[sport] = who(s.recv(512).decode())
        except OSError as err:
            out[sport] = f"ERROR {err}"
        finally:
            s.close()
    return out


def client_netns() -> str:
    return registry.pod(CLUSTER, "demo/client").netns


def external(env: Env) -> dict[tuple[str, int], Counter[str]]:
    """From the external client, with the fixed source ports, to node-1's NodePort and the LB IP."""
    ext = registry.require(CLUSTER).external
    assert ext is not None
    out = {}
    for addr, port in ((env.node_ip("node-1"), 30080), (LB_IP, 80)):
        replies = [tcp_from(ext.netns, addr, port, sport) for sport in EXT_PORTS]
        assert all(r.startswith("demo/api-") for r in replies), (addr, replies)
        out[(addr, port)] = Counter(who(r) for r in replies)
    return out


def tap() -> ReplyTap:
    """Replies of external connections arriving on node-1's eth0 (the LB node's underlay)."""
    reg = registry.require(CLUSTER)
    assert reg.external is not None
    return ReplyTap(reg.nodes["node-1"].netns, reg.external.underlay_ip,
                    [reg.pods[p].ip for p in ("demo/api-2", "demo/api-3")], 3000)


def flow_values(node: str) -> list[S.LbFlowValue]:
    rec = registry.require(CLUSTER).nodes[node]
    with lb_maps.Map.from_pin(NodeDatapath(CLUSTER, node, rec.netns).pin_dir / "lb_flows") as m:
        return [S.LbFlowValue.from_buffer_copy(v) for _, v in m.items()]


# ---------------------------------------------------------------- the tests, in order


def test_lab_up_plan_apply_then_plan_shows_no_changes(env: Env) -> None:
    plan_text = env.apply_and_converge()
    assert "+ node-1 loadbalancer" in plan_text and "service demo/api-public 192.0.2.50:80/TCP" in plan_text
    for node, rec in registry.require(CLUSTER).nodes.items():
        lb = observe_node(CLUSTER, node, rec.netns).load_balancer
        assert lb.enabled and lb.interface == "eth0", node  # netdev programs attached by apply


def test_clusterip_from_a_pod_spreads_over_the_backends_random(env: Env) -> None:
    seen = Counter(who(tcp_from(client_netns(), VIP, 80)) for _ in range(30))
    print(f"\nClusterIP random TCP spread over 30 connections: {dict(seen)}")
    assert set(seen) == set(API)
    udp = udp_from(client_netns(), VIP, 5353, UDP_PORTS)
    print(f"ClusterIP random UDP spread over {len(udp)} flows: {dict(Counter(udp.values()))}")
    assert set(udp.values()) == set(API)


def test_nodeport_and_loadbalancer_from_the_external_client_snat(env: Env) -> None:
    with tap() as t:
        seen = external(env)
        replies, requests = t.read()
    print(f"\nsnat: {seen}; arriving at node-1 eth0: {replies} reply packets, {requests} from the client")
    assert all(len(c) >= 2 for c in seen.values()), seen
    assert requests > 0 and replies > 0  # SNAT: remote backends answer through node-1
    assert any(v.flags & S.LbFlowFlags.SNAT for v in flow_values("node-1"))


def test_dsr_is_a_replace_that_flushes_flows_and_keeps_services_working(env: Env) -> None:
    env.set_setting("mode", "dsr")
    plan_text = env.apply_and_converge()
    assert "-/+ node-1 loadbalancer" in plan_text
    assert "settings mode=snat -> mode=dsr: apply flushes" in plan_text
    assert "load-balancer settings change" in plan_text and "break" in plan_text
    # The flush: no SNAT flow of the snat phase is left on any node.
    for node in ("node-1", "node-2", "node-3"):
        assert not [v for v in flow_values(node) if v.flags & S.LbFlowFlags.SNAT], node
    with tap() as t:
        seen = external(env)  # the same client source ports as in the snat phase
        replies, requests = t.read()
    print(f"\ndsr: {seen}; arriving at node-1 eth0: {replies} reply packets, {requests} from the client")
    assert all(len(c) >= 2 for c in seen.values()), seen
    assert requests > 0
    assert replies == 0  # the backends' nodes answer the client directly
    seen_vip = Counter(who(tcp_from(client_netns(), VIP, 80)) for _ in range(30))
    assert set(seen_vip) == set(API), seen_vip
    udp = udp_from(client_netns(), VIP, 5353, UDP_PORTS)  # random picks, kept in lb_flows
    assert set(udp.values()) == set(API)


def maglev_prediction(sports: range, proto_port: int = 5353) -> dict[int, str]:
    """The backend pod the node-1 Maglev table gives each client flow (lb_tuple_hash of lb.h)."""
    reg = registry.require(CLUSTER)
    lb = observe_node(CLUSTER, "node-1", reg.nodes["node-1"].netns).load_balancer
    svc = lb.services[LbFrontend(IPv4Address(VIP), proto_port, PROTO_UDP)]
    by_ip = {p.ip: k for k, p in reg.pods.items()}
    client = IPv4Address(reg.pods["demo/client"].ip)
    out = {}
    for sport in sports:
        slot = lb_maps.tuple_hash(client, IPv4Address(VIP), sport, proto_port, PROTO_UDP) % len(svc.maglev)
        out[sport] = by_ip[str(lb.backends[svc.maglev[slot]].address)]
    return out


def test_maglev_is_a_replace_and_every_flow_then_follows_the_table(env: Env) -> None:
    env.set_setting("algorithm", "maglev")
    plan_text = env.apply_and_converge()
    assert "settings algorithm=random -> algorithm=maglev: apply flushes" in plan_text
    # The UDP flows of the random phase used these very source ports: after the flush every one
    # is re-selected by the Maglev table, none keeps its random backend.
    got = udp_from(client_netns(), VIP, 5353, UDP_PORTS)
    assert got == maglev_prediction(UDP_PORTS)
    print(f"\nClusterIP Maglev UDP spread over {len(got)} flows: {dict(Counter(got.values()))}")
    assert set(got.values()) == set(API)
    seen = Counter(who(tcp_from(client_netns(), VIP, 80)) for _ in range(30))
    print(f"ClusterIP Maglev TCP spread over 30 connections: {dict(seen)}")
    assert set(seen) == set(API)
    assert all(len(c) >= 2 for c in external(env).values())


def pods_without(text: str, name: str) -> str:
    docs = [d for d in text.split("\n---\n") if f"name: {name}\n" not in d]
    assert len(docs) == text.count("\n---\n")  # exactly one document went
    return "\n---\n".join(docs)


def test_backend_removal_keeps_established_connections_and_moves_about_one_nth(env: Env) -> None:
    with entered(client_netns()):
        conn = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
    try:
        conn.settimeout(2.0)
        conn.connect((STREAM_VIP, 7000))
        f = conn.makefile("rwb")
        f.write(b"before\n")
        f.flush()
        holder, _, word = f.readline().decode().strip().partition(" ")
        assert holder in API and word == "before"
        removed = next(p for p in ("demo/api-2", "demo/api-3") if p != holder)  # checks name api-1
        before = udp_from(client_netns(), VIP, 5353, MAGLEV_PORTS)
        assert set(before.values()) == set(API)

        pods = env.repo / "inventory" / "pods.yaml"
        pods.write_text(pods_without(pods.read_text(), removed.split("/")[1]))
        plan_text = env.apply_and_converge()
        assert re.search(r"- node-\d backend ", plan_text)
        assert re.search(r"\d+ of \d+ slots \([\d.]+%\) change backend", plan_text)

        f.write(b"after\n")  # the same ESTABLISHED connection, to a surviving backend
        f.flush()
        assert f.readline().decode().strip() == f"{holder} after"
    finally:
        conn.close()

    # Maglev's consistency, measured with real flows: forget the client node's flow cache (an
    # established flow keeps its backend anyway), so every flow re-selects by the new table.
    rec = registry.require(CLUSTER).nodes["node-1"]
    lb_maps.flush_flows(NodeDatapath(CLUSTER, "node-1", rec.netns).pin_dir)
    after = udp_from(client_netns(), VIP, 5353, MAGLEV_PORTS)
    assert removed not in after.values() and not any(v.startswith("ERROR") for v in after.values())
    moved = [p for p in MAGLEV_PORTS if after[p] != before[p]]
    share = sum(1 for p in MAGLEV_PORTS if before[p] == removed) / len(MAGLEV_PORTS)
    survivors_moved = sum(1 for p in moved if before[p] != removed) / len(MAGLEV_PORTS)
    frac = len(moved) / len(MAGLEV_PORTS)
    print(f"\nMaglev, 1 of 3 backends removed ({removed}): {len(moved)} of {len(MAGLEV_PORTS)} flows moved "
          f"({frac:.3f}); the removed backend held {share:.3f}; flows of surviving backends moved: "
          f"{survivors_moved:.3f}")
    assert all(after[p] != removed for p in MAGLEV_PORTS)
    assert 0.2 <= frac <= 0.47  # about 1/N = 0.33: the removed backend's flows, and few others
    assert survivors_moved <= 0.1
