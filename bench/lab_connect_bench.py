"""TCP connect + first byte latency between two lab pods, 0 vs 50,000 policy entries.

Builds a two-node lab with the datapath attached and enforcement on, lets frontend (n1) reach
database:5432 (n2), and measures connect-to-first-reply-byte from inside the frontend pod:
once with the database endpoint's policy map holding only the allow entry, once with 50,000
more entries (other identities). An LPM lookup is O(key bits), so the two should be the same
within noise. Rounds alternate between the two settings to spread machine noise evenly.

Run as root: .venv/bin/python bench/lab_connect_bench.py [--connects 300] [--entries 50000]
"""

from __future__ import annotations

import argparse
import statistics
import sys
import time
from ipaddress import IPv4Network

from meshctl.dataplane.libbpf import Map
from meshctl.dataplane.maps import INNER_POLICY_MAP, U32, encode_policy
from meshctl.dataplane.node import node_pin_dir
from meshctl.lab import cluster, probe
from meshctl.lab.seed import seed_node
from meshctl.lab.topology import LabNode, LabPod, Topology, validate
from meshctl.nodestate import PROTO_TCP, Direction, EndpointEntry, PolicyEntry, PolicyKey

NAME = "bench-lab"
FE, DB = 1001, 1003
EP_FE, EP_DB = 11, 13


def topology() -> Topology:
    nodes = (LabNode("n1", IPv4Network("10.230.1.0/24")), LabNode("n2", IPv4Network("10.230.2.0/24")))
    topo = Topology(NAME, IPv4Network("172.31.253.0/24"), nodes,
                    (LabPod("demo/frontend", "n1", (80,)), LabPod("demo/database", "n2", (5432,))))
    validate(topo)
    return topo


def policy(extra: int) -> dict[PolicyKey, PolicyEntry]:
    """The allow entry plus `extra` entries for other identities and ports."""
    entries = {PolicyKey(Direction.INGRESS, FE, PROTO_TCP, 5432, 16): PolicyEntry(cookie=1)}
    for i in range(extra):
        key = PolicyKey(Direction.INGRESS, 100_000 + i // 8, PROTO_TCP, 1000 + i % 8, 16)
        entries[key] = PolicyEntry(cookie=2 + i)
    return entries


def install(entries: dict[PolicyKey, PolicyEntry]) -> None:
    """Swap the database endpoint's policy to a new inner map sized for `entries`.

    The shared inner-map template holds 16,384 entries; the kernel compares type, key/value size
    and flags of inner maps but not max_entries, so a bigger inner map can be swapped in.
    """
    spec = dict(INNER_POLICY_MAP)
    spec["max_entries"] = max(int(spec["max_entries"]), len(entries))
    with Map.create(name="mc_bench_pol", **spec) as inner:  # type: ignore[arg-type]
        for k, v in entries.items():
            kb, vb = encode_policy(k, v)
            inner.update(kb, vb)
        with Map.from_pin(node_pin_dir(NAME, "n2") / "policy_maps") as outer:
            outer.update(U32.pack(EP_DB), U32.pack(inner.fd))
        count = len(list(inner.keys()))
    assert count == len(entries), (count, len(entries))


def measure(netns: str, dst: str, n: int) -> list[float]:
    out = []
    for _ in range(n):
        r = probe.tcp_connect_in(netns, dst, 5432, timeout=2.0)
        if not r.ok:
            raise SystemExit(f"connect failed: {r.error}")
        out.append(r.elapsed_s * 1e6)
    return out


def pct(xs: list[float], q: float) -> float:
    s = sorted(xs)
    return s[min(len(s) - 1, int(q * len(s)))]


def main() -> int:
    ap = argparse.ArgumentParser()
    ap.add_argument("--connects", type=int, default=300)
    ap.add_argument("--entries", type=int, default=50_000)
    ap.add_argument("--rounds", type=int, default=3)
    args = ap.parse_args()
    cluster.down(NAME)
    try:
        res = cluster.up(topology(), with_datapath=True)
        if not res.datapath:
            print("datapath not available", file=sys.stderr)
            return 1
        reg = res.registry
        fe, db = reg.pods["demo/frontend"], reg.pods["demo/database"]
        ipc = {IPv4Network(f"{fe.ip}/32"): FE, IPv4Network(f"{db.ip}/32"): DB}
        seed_node(NAME, "n1", ipcache=ipc, endpoints={fe.address: EndpointEntry(EP_FE, FE, False, False)})
        seed_node(NAME, "n2", ipcache=ipc, endpoints={db.address: EndpointEntry(EP_DB, DB, True, False)})
        small, big = policy(0), policy(args.entries)
        t0 = time.perf_counter()
        install(big)
        fill_s = time.perf_counter() - t0
        results: dict[str, list[float]] = {"0": [], str(args.entries): []}
        per_round = max(1, args.connects // args.rounds)
        measure(fe.netns, db.ip, 50)  # warm up caches, CT, ARP
        for _ in range(args.rounds):
            for label, entries in (("0", small), (str(args.entries), big)):
                install(entries)
                measure(fe.netns, db.ip, 10)
                results[label] += measure(fe.netns, db.ip, per_round)
        print(f"lab TCP connect + first byte, frontend (n1) -> database:5432 (n2), enforcement on, "
              f"{per_round * args.rounds} connects each; filling {args.entries} entries took {fill_s:.2f} s")
        med = {}
        for label, xs in results.items():
            med[label] = statistics.median(xs)
            print(f"  {label:>6} policy entries: median {med[label]:7.1f} us   p90 {pct(xs, 0.9):7.1f} us")
        ratio = med[str(args.entries)] / med["0"]
        print(f"  ratio median {args.entries}/0: {ratio:.3f}")
    finally:
        cluster.down(NAME)
    return 0


if __name__ == "__main__":
    sys.exit(main())
