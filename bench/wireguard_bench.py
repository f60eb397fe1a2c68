"""WireGuard benchmark: pod-to-pod throughput and TCP connect latency across two lab nodes,
plain vs encrypted (wireguard-go), in one run so the ratio is meaningful on a noisy machine.

A two-node lab without the BPF datapath (only the encryption differs between the runs); a sink
in pod b (sockets created in its netns, served by threads of this process):
- throughput: one TCP stream of --mbytes from pod a to pod b, best of --repeat;
- connect: --connects sequential connect + 1-byte reply + close, median and p90.
Encryption is switched on with the same phased steps meshctl applies (3 steps).

Run as root: .venv/bin/python bench/wireguard_bench.py [--mbytes 64] [--connects 300]
"""

from __future__ import annotations

import argparse
import os
import socket
import statistics
import threading
import time
from ipaddress import IPv4Address, IPv4Network

CLUSTER = f"t-wg-bench-{os.getpid() % 10000}"
STREAM_PORT, CONNECT_PORT = 5201, 5202


def _listen(netns: str, port: int) -> socket.socket:
    from meshctl.lab.netns import entered

    with entered(netns):
        s = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
    s.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    s.bind(("0.0.0.0", port))
    s.listen(128)
    return s


def _sink(server: socket.socket) -> None:
    while True:
        try:
            conn, _ = server.accept()
        except OSError:
            return
        with conn:
            while conn.recv(1 << 20):
                pass
            conn.sendall(b"k")


def _answer(server: socket.socket) -> None:
    while True:
        try:
            conn, _ = server.accept()
        except OSError:
            return
        with conn:
            conn.sendall(b"k")


def _client(netns: str) -> socket.socket:
    from meshctl.lab.netns import entered

    with entered(netns):
        return socket.socket(socket.AF_INET, socket.SOCK_STREAM)


def throughput(netns: str, ip: str, mbytes: int, repeat: int) -> float:
    """Best Mbit/s of `repeat` streams of `mbytes` MiB (sent + acknowledged by the sink)."""
    chunk = b"x" * (1 << 16)
    best = 0.0
    for _ in range(repeat):
        c = _client(netns)
        c.connect((ip, STREAM_PORT))
        start = time.perf_counter()
        for _ in range(mbytes * 16):
            c.sendall(chunk)
        c.shutdown(socket.SHUT_WR)
        assert c.recv(1) == b"k"
        elapsed = time.perf_counter() - start
        c.close()
        best = max(best, mbytes * 8 * 1.048576 / elapsed)
    return best


def connect_latency(netns: str, ip: str, n: int) -> tuple[float, float]:
    """(median, p90) microseconds of connect + first byte + close."""
    samples = []
    for _ in range(n):
        c = _client(netns)
        start = time.perf_counter()
        c.connect((ip, CONNECT_PORT))
        assert c.recv(1) == b"k"
        samples.append((time.perf_counter() - start) * 1e6)
        c.close()
    samples.sort()
    return statistics.median(samples), samples[int(len(samples) * 0.9)]


def converge(reg: object, enabled: bool) -> int:
    from meshctl.compile.encryption import EncryptionNode, EncryptionSettings, encryption_targets
    from meshctl.dataplane.wireguard.names import interface
    from meshctl.dataplane.wireguard.reconcile import reconcile_wireguard
    from meshctl.observe.wireguard import observe_wireguard

    nodes_rec = reg.nodes  # type: ignore[attr-defined]
    nodes = [EncryptionNode(n, IPv4Network(r.pod_cidr), IPv4Address(r.underlay_ip), interface(CLUSTER, n))
             for n, r in nodes_rec.items()]
    settings = EncryptionSettings(enabled=enabled)
    for step in range(6):
        live = {n: observe_wireguard(CLUSTER, n, r.netns) for n, r in nodes_rec.items()}
        targets = encryption_targets(nodes, settings, live)
        if all(targets[n] == live[n] for n in live):
            return step
        for n, r in nodes_rec.items():
            reconcile_wireguard(CLUSTER, n, r.netns, live[n], targets[n])
    raise RuntimeError("no convergence")


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__)
    ap.add_argument("--mbytes", type=int, default=64)
    ap.add_argument("--repeat", type=int, default=3)
    ap.add_argument("--connects", type=int, default=300)
    args = ap.parse_args()

    from meshctl.lab import cluster, registry
    from meshctl.lab.topology import LabNode, LabPod, Topology

    topo = Topology(
        cluster=CLUSTER, underlay_cidr=IPv4Network("172.31.253.0/24"),
        nodes=(LabNode("n1", IPv4Network("10.231.1.0/24")), LabNode("n2", IPv4Network("10.231.2.0/24"))),
        pods=(LabPod("b/a", "n1"), LabPod("b/b", "n2")),
    )
    servers: list[socket.socket] = []
    try:
        cluster.up(topo, with_datapath=False)
        reg = registry.load(CLUSTER)
        assert reg is not None
        a, b = reg.pods["b/a"], reg.pods["b/b"]
        servers = [_listen(b.netns, STREAM_PORT), _listen(b.netns, CONNECT_PORT)]
        threading.Thread(target=_sink, args=(servers[0],), daemon=True).start()
        threading.Thread(target=_answer, args=(servers[1],), daemon=True).start()
        results = {}
        for mode in ("plain", "encrypted"):
            if mode == "encrypted":
                steps = converge(reg, True)
                print(f"encryption enabled in {steps} step(s)")
            connect_latency(a.netns, b.ip, 20)  # warm up (ARP, handshake)
            results[mode] = (throughput(a.netns, b.ip, args.mbytes, args.repeat),
                             *connect_latency(a.netns, b.ip, args.connects))
        converge(reg, False)
        print(f"\npod a (n1) -> pod b (n2), {args.mbytes} MiB x{args.repeat}, {args.connects} connects")
        print(f"{'mode':<10} {'Mbit/s':>10} {'connect p50 us':>16} {'connect p90 us':>16}")
        for mode, (mbit, p50, p90) in results.items():
            print(f"{mode:<10} {mbit:>10.0f} {p50:>16.0f} {p90:>16.0f}")
        (pm, p50, _), (em, e50, _) = results["plain"], results["encrypted"]
        print(f"\nencrypted/plain: throughput x{em / pm:.2f}, connect latency x{e50 / p50:.2f}")
    finally:
        for s in servers:
            s.close()
        cluster.down(CLUSTER, ("n1", "n2"))


if __name__ == "__main__":
    main()
