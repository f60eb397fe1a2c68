"""The kernel side of WireGuard in a small lab of its own (two nodes, no BPF datapath):
wireguard-go per node netns, keys, peers, tunnel routes, strict mode, observe round trip."""

from __future__ import annotations

import os
import stat
import subprocess
from collections.abc import Iterator
from ipaddress import IPv4Address, IPv4Network
from pathlib import Path

import pytest
from lab_helpers import lab, unique
from wg_helpers import connection_loop, underlay_capture

from meshctl.backend.lab import find_lab
from meshctl.compile.encryption import EncryptionNode, EncryptionSettings, encryption_targets
from meshctl.dataplane.wireguard import device, names
from meshctl.dataplane.wireguard.reconcile import reconcile_wireguard
from meshctl.lab import registry
from meshctl.lab.probe import udp_exchange_in
from meshctl.lab.topology import LabNode, LabPod, Topology, validate
from meshctl.nodestate import NO_ENCRYPTION, WireguardState
from meshctl.observe.wireguard import observe_wireguard

pytestmark = pytest.mark.privileged

ON = EncryptionSettings(enabled=True, strict_mode=True, persistent_keepalive=0)
OFF = EncryptionSettings(enabled=False)


@pytest.fixture(scope="module")
def wlab() -> Iterator[registry.Registry]:
    name = unique("t-wg-k")
    topo = Topology(
        cluster=name, underlay_cidr=IPv4Network("172.31.252.0/24"),
        nodes=(LabNode("n1", IPv4Network("10.221.1.0/24")), LabNode("n2", IPv4Network("10.221.2.0/24")),
               LabNode("n3", IPv4Network("10.221.3.0/24"))),
        pods=(LabPod("d/a", "n1", (80,), (53,)), LabPod("d/b", "n2", (80,), (53,))),
    )
    validate(topo)
    with lab(topo, with_datapath=False):
        reg = registry.load(name)
        assert reg is not None
        yield reg
    for n in ("n1", "n2", "n3"):  # lab down stopped wireguard-go and removed the keys
        assert not names.uapi_socket(names.interface(name, n)).exists()
        assert not names.key_dir(name, n).exists()


ACTIVE = ("n1", "n2")  # the cluster's nodes; n3 joins and leaves in the last test


def _nodes(reg: registry.Registry, active: tuple[str, ...]) -> list[EncryptionNode]:
    return [
        EncryptionNode(n.name, IPv4Network(n.pod_cidr), IPv4Address(n.underlay_ip),
                       names.interface(reg.cluster, n.name))
        for n in reg.nodes.values() if n.name in active
    ]


def _observe(reg: registry.Registry, active: tuple[str, ...] = ACTIVE) -> dict[str, WireguardState]:
    """The lab backend's view: WireGuard peers named after the lab node at their endpoint."""
    lab = find_lab(reg.cluster)
    assert lab is not None
    return lab.wireguard([n for n in reg.nodes if n in active])


def _converge(reg: registry.Registry, settings: EncryptionSettings, active: tuple[str, ...] = ACTIVE) -> int:
    for rounds in range(6):
        live = _observe(reg, active)
        targets = encryption_targets(_nodes(reg, active), settings, live)
        if all(t == live[n] for n, t in targets.items()):
            return rounds
        for n, rec in reg.nodes.items():
            if n not in active:
                continue
            reconcile_wireguard(reg.cluster, n, rec.netns, live[n], targets[n])
            after = observe_wireguard(reg.cluster, n, rec.netns)
            want = targets[n]
            if want.interface and not want.public_key:
                assert after.public_key
                want = WireguardState(want.interface, after.public_key, want.listen_port, want.fwmark,
                                      want.peers, want.sources, want.strict)
            assert after == want, f"observe after reconcile of {n} differs from its target"
    raise AssertionError("no convergence")


def _exchange(reg: registry.Registry, marker: bytes) -> bool:
    a, b = reg.pods["d/a"], reg.pods["d/b"]
    return udp_exchange_in(a.netns, b.ip, 53, marker, timeout=1.0).ok


def test_plain_by_default_marker_visible(wlab: registry.Registry, tmp_path: Path) -> None:
    assert _observe(wlab) == {"n1": NO_ENCRYPTION, "n2": NO_ENCRYPTION}
    with underlay_capture(wlab.cluster, tmp_path) as cap:
        assert _exchange(wlab, b"MARKER-PLAIN-7c1e")
    assert cap.payload_has(b"MARKER-PLAIN-7c1e")


def test_enable_encrypts_without_losing_a_connection(wlab: registry.Registry, tmp_path: Path) -> None:
    a, b = wlab.pods["d/a"], wlab.pods["d/b"]
    with connection_loop(a.netns, b.ip, 80) as loop:
        assert _converge(wlab, ON) == 3
    assert loop.ok > 0 and loop.failed == []
    for n in ("n1", "n2"):
        kdir = names.key_dir(wlab.cluster, n)
        assert stat.S_IMODE(os.stat(kdir / "private.key").st_mode) == 0o600
        live = observe_wireguard(wlab.cluster, n, wlab.nodes[n].netns)
        assert live.public_key == (kdir / "public.key").read_text().strip()
        assert all(p.routed for p in live.peers.values()) and len(live.peers) == 1
    with underlay_capture(wlab.cluster, tmp_path) as cap:
        assert _exchange(wlab, b"MARKER-SECRET-41f9")
    assert not cap.payload_has(b"MARKER-SECRET-41f9")
    lines = cap.ip_lines()
    assert lines, "the exchange crossed the underlay"
    port = f".{names.DEFAULT_PORT}"
    assert all(" UDP" in ln or "UDP," in ln for ln in lines), lines
    assert all(port + " >" in ln or port + ":" in ln for ln in lines), lines


def test_strict_mode_drops_plain_pod_packets(wlab: registry.Registry) -> None:
    n1 = wlab.nodes["n1"]
    ifname = names.interface(wlab.cluster, "n1")
    # Take n1's tunnel route away by hand: its pod traffic to n2 would now leave in the clear.
    subprocess.run(["ip", "-n", n1.netns, "route", "del", wlab.nodes["n2"].pod_cidr, "table",
                    str(names.TABLE)], check=True)
    live = observe_wireguard(wlab.cluster, "n1", n1.netns)
    assert not any(p.routed for p in live.peers.values())  # drift is visible
    assert not _exchange(wlab, b"MARKER-STRICT")
    counters = subprocess.run(
        ["nsenter", f"--net=/run/netns/{n1.netns}", "--", "iptables", "-w", "-nvxL", names.STRICT_CHAIN],
        capture_output=True, text=True, check=True).stdout
    dropped = [int(line.split()[0]) for line in counters.splitlines() if "DROP" in line]
    assert sum(dropped) >= 1, counters
    assert _converge(wlab, ON) == 1  # one step heals it
    assert _exchange(wlab, b"MARKER-HEALED")
    assert device.exists(ifname)


def test_disable_goes_plain_without_losing_a_connection(wlab: registry.Registry, tmp_path: Path) -> None:
    a, b = wlab.pods["d/a"], wlab.pods["d/b"]
    with connection_loop(a.netns, b.ip, 80) as loop:
        assert _converge(wlab, OFF) == 2
    assert loop.ok > 0 and loop.failed == []
    assert _observe(wlab) == {"n1": NO_ENCRYPTION, "n2": NO_ENCRYPTION}
    for n in ("n1", "n2"):
        assert not device.exists(names.interface(wlab.cluster, n))
    with underlay_capture(wlab.cluster, tmp_path) as cap:
        assert _exchange(wlab, b"MARKER-PLAIN-AGAIN")
    assert cap.payload_has(b"MARKER-PLAIN-AGAIN")


def test_node_encryption_tunnels_node_traffic_too(wlab: registry.Registry, tmp_path: Path) -> None:
    import socket
    import threading

    from meshctl.lab.netns import entered

    settings = EncryptionSettings(enabled=True, node_encryption=True)
    n1, n2 = wlab.nodes["n1"], wlab.nodes["n2"]
    try:
        assert _converge(wlab, settings) == 3
        live = observe_wireguard(wlab.cluster, "n1", n1.netns)
        assert live.sources == ("not fwmark 0xe57",)
        with entered(n2.netns):
            server = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
        server.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        server.bind((n2.underlay_ip, 7301))
        server.listen(4)

        def answer() -> None:
            conn, _ = server.accept()
            with conn:
                conn.sendall(conn.recv(64))

        thread = threading.Thread(target=answer, daemon=True)
        thread.start()
        with underlay_capture(wlab.cluster, tmp_path) as cap:
            with entered(n1.netns):
                client = socket.create_connection((n2.underlay_ip, 7301), timeout=2)
            with client:
                client.sendall(b"MARKER-NODE-9d2a")
                assert client.recv(64) == b"MARKER-NODE-9d2a"
            assert _exchange(wlab, b"MARKER-POD-9d2a")
        thread.join(timeout=2)
        server.close()
        assert not cap.payload_has(b"MARKER-NODE-9d2a") and not cap.payload_has(b"MARKER-POD-9d2a")
        assert cap.ip_lines() and all("UDP" in ln for ln in cap.ip_lines()), cap.ip_lines()
    finally:
        assert _converge(wlab, OFF) <= 2
    assert _observe(wlab) == {"n1": NO_ENCRYPTION, "n2": NO_ENCRYPTION}


def test_peers_follow_a_node_joining_and_leaving(wlab: registry.Registry) -> None:
    a, b = wlab.pods["d/a"], wlab.pods["d/b"]
    key_of = {}
    try:
        with connection_loop(a.netns, b.ip, 80) as loop:
            assert _converge(wlab, ON) == 3
            assert _converge(wlab, ON, ("n1", "n2", "n3")) == 3  # n3 joins: key, peers, routes
            live = _observe(wlab, ("n1", "n2", "n3"))
            key_of = {n: w.public_key for n, w in live.items()}
            for n, w in live.items():
                assert {p.name for p in w.peers.values() if p.routed} == {"n1", "n2", "n3"} - {n}
            assert _converge(wlab, ON) == 1  # n3 leaves: the others drop it as a peer
        assert loop.ok > 0 and loop.failed == []
        for n, w in _observe(wlab).items():
            assert key_of["n3"] not in w.peers, n
    finally:
        _converge(wlab, OFF, ("n1", "n2", "n3"))
    assert set(_observe(wlab, ("n1", "n2", "n3")).values()) == {NO_ENCRYPTION}
