"""meshctl's eBPF load balancer against kube-proxy (iptables / nftables), side by side in one run.

For each size (default 1,000 / 5,000 / 20,000 services, 2 backends each, the same service set as
bench/kubeproxy_baseline.py): the baseline rows come from kubeproxy_baseline.run(); the meshctl
row uses the same shape of topology in its own netns (client `mc-bench-lbc` -> node `mc-bench-lb`
-> backend `mc-bench-lbb`), the datapath loaded on the node with from_pod/to_pod on the client's
veth, and every service written into the LB maps with lb_maps.write.

- change: one endpoint of the last service moves 8080 -> 8081. kube-proxy's time is the
  iptables-restore / nft run (rule text generated before the clock); meshctl's is lb_maps.write
  of the planned change (the diff computed before the clock): new backend, the service's slots,
  old backend removed.
- connect: TCP connect + first reply line to the first and the last service's ClusterIP, median.
Ratios: baseline change / meshctl change, and meshctl last/first latency (flat = about 1).

Run as root: .venv/bin/python bench/kubeproxy_bench.py [--sizes 1000,5000,20000] [--connects 200]
             [--modes iptables-nft,iptables-legacy,nftables]
"""

from __future__ import annotations

import argparse
import os
import statistics
import sys
import time
from dataclasses import replace
from ipaddress import IPv4Address
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))
sys.path.insert(0, str(Path(__file__).resolve().parent))

import kubeproxy_baseline as kp

from meshctl.compile.services import stable_ids
from meshctl.dataplane import lb_maps
from meshctl.dataplane.maps import EndpointsMap
from meshctl.dataplane.node import NodeDatapath
from meshctl.nodestate import (
    PROTO_TCP,
    EndpointEntry,
    FrozenMap,
    LbBackendEntry,
    LbFrontend,
    LbService,
    LoadBalancerState,
)

NODE_NS, CLIENT_NS, BACKEND_NS = "mc-bench-lb", "mc-bench-lbc", "mc-bench-lbb"
CLUSTER, NODE = "bench-lb", "n1"


def _delete() -> None:
    kp._delete_netns((CLIENT_NS, BACKEND_NS, NODE_NS))


def _topology(backends: int) -> list[str]:
    """The baseline's topology under our netns names, plus the node's route to the client endpoint."""
    real = kp._topology(backends, NODE_NS, CLIENT_NS, BACKEND_NS)
    kp._ip(NODE_NS, "route", "add", f"{kp.CLIENT_IP}/32", "dev", "c0")
    return real


def lb_state(services: list[kp.ServiceSpec]) -> LoadBalancerState:
    """The LoadBalancerState compile would make for these ClusterIP services (random selection)."""
    def backend(ep: str) -> LbBackendEntry:
        ip, port = ep.split(":")
        return LbBackendEntry(IPv4Address(ip), int(port), PROTO_TCP)

    bids = stable_ids(str(backend(ep)) for s in services for ep in s.endpoints)
    sids = stable_ids(f"{s.vip}:{s.port}/TCP" for s in services)
    svcs, bes = {}, {}
    for s in services:
        ids = tuple(bids[str(backend(ep))] for ep in s.endpoints)
        fe = LbFrontend(IPv4Address(s.vip), s.port, PROTO_TCP)
        svcs[fe] = LbService(sids[f"{s.vip}:{s.port}/TCP"], ids)
        bes.update((bids[str(backend(ep))], backend(ep)) for ep in s.endpoints)
    return LoadBalancerState(enabled=True, settings="mode=snat algorithm=random", services=FrozenMap(svcs),
                             backends=FrozenMap(bes))


class MeshctlLb:
    """The meshctl side of one size: topology, server, datapath, all services in the maps."""

    def __init__(self, n: int, backends: int) -> None:
        self.server_pid: int | None = None
        real = _topology(backends)
        self.services = kp.make_services(n, backends, (0, n - 1), real)
        self.server_pid = kp._start_server(BACKEND_NS)
        self.dp = NodeDatapath(CLUSTER, NODE, NODE_NS)
        self.dp.remove()
        self.dp.ensure_loaded()
        with EndpointsMap.from_dir(self.dp.pin_dir) as eps:
            eps.upsert({IPv4Address(kp.CLIENT_IP): EndpointEntry(1, 1001, False, False)})
        self.dp.attach("c0", kp.CLIENT_IP)
        self.state = lb_state(self.services)
        start = time.perf_counter()
        lb_maps.write(self.dp.pin_dir, LoadBalancerState(), self.state)
        self.build_s = time.perf_counter() - start

    def time_endpoint_change(self) -> float:
        """Move the last service's first endpoint between 8080 and 8081; seconds of map writes."""
        svc = self.services[-1]
        ip, port = svc.endpoints[0].split(":")
        svc.endpoints[0] = f"{ip}:{kp.PORTS[1] if int(port) == kp.PORTS[0] else kp.PORTS[0]}"
        new_full = lb_state(self.services)
        fe = LbFrontend(IPv4Address(svc.vip), svc.port, PROTO_TCP)
        old_s, new_s = self.state.services[fe], new_full.services[fe]
        cur = replace(self.state, services=FrozenMap({fe: old_s}),
                      backends=FrozenMap({i: self.state.backends[i] for i in old_s.backends}))
        # What the plan diff holds: a backend another service still uses is not removed.
        kept = {i: new_full.backends[i] for i in old_s.backends if i in new_full.backends}
        tgt = replace(new_full, services=FrozenMap({fe: new_s}),
                      backends=FrozenMap({**kept, **{i: new_full.backends[i] for i in new_s.backends}}))
        start = time.perf_counter()
        lb_maps.write(self.dp.pin_dir, cur, tgt)
        elapsed = time.perf_counter() - start
        self.state = new_full
        return elapsed

    def connect_latency(self, count: int, which: str) -> dict[str, float]:
        return kp._connect_latency(CLIENT_NS, self.services[0 if which == "first" else -1], count)

    def close(self) -> None:
        if self.server_pid is not None:
            kp._stop_server(self.server_pid)
            self.server_pid = None
        self.dp.remove()
        _delete()


def meshctl_row(n: int, backends: int, connects: int) -> dict[str, object]:
    lb = MeshctlLb(n, backends)
    try:
        row: dict[str, object] = {"mode": "meshctl-ebpf", "services": n, "build_ms": lb.build_s * 1e3}
        row["change_ms"] = statistics.median(lb.time_endpoint_change() * 1e3 for _ in range(5))
        row["connect_first"] = lb.connect_latency(connects, "first")
        row["connect_last"] = lb.connect_latency(connects, "last")
        return row
    finally:
        lb.close()


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--sizes", default="1000,5000,20000")
    ap.add_argument("--backends", type=int, default=2)
    ap.add_argument("--modes", default=",".join(kp.MODES))
    ap.add_argument("--connects", type=int, default=200)
    ap.add_argument("--budget", type=float, default=30.0)
    a = ap.parse_args(argv)
    if os.geteuid() != 0:
        print("needs root (network namespaces, BPF, iptables)", file=sys.stderr)
        return 1
    sizes = [int(s) for s in a.sizes.split(",") if s]
    modes = [m for m in a.modes.split(",") if m in kp.available_modes()]
    print("times in ms (kernel update only), latency in us (connect + first reply, median)")
    base_rows = kp.run(sizes, a.backends, modes, a.connects, a.budget)
    print()
    print(f"{'size':>6} {'mode':16} {'change ms':>10} {'x slower':>9} {'1st us':>8} {'last us':>8} "
          f"{'last/1st':>8}")
    for n in sizes:
        ours = meshctl_row(n, a.backends, a.connects)
        rows = [r for r in base_rows if r["services"] == n and not r.get("skipped")] + [ours]
        for r in rows:
            first, last = r["connect_first"], r["connect_last"]
            assert isinstance(first, dict) and isinstance(last, dict)
            ratio = float(r["change_ms"]) / float(ours["change_ms"])  # type: ignore[arg-type]
            print(f"{n:>6} {r['mode']:16} {float(r['change_ms']):10.3f} {ratio:9.0f} "  # type: ignore[arg-type]
                  f"{first['median_us']:8.0f} {last['median_us']:8.0f} "
                  f"{last['median_us'] / first['median_us']:8.2f}", flush=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
