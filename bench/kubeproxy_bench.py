"""meshctl's eBPF load balancer against kube-proxy (iptables / nftables), side by side in one run.

For each size (default 1,000 / 5,000 / 20,000 services, 2 backends each, the service set of
bench/kubeproxy_baseline.py), one endpoint of the last service moves (8080 -> 8081, then back).
Rows, and exactly what each one times:

- kube-proxy iptables partial: `iptables-restore --noflush --counters` of what kube-proxy writes
  with MinimizeIPTablesRestore (default since 1.27): KUBE-SERVICES, KUBE-NODEPORTS and the other
  top-level chains whole, plus the changed service's KUBE-SVC/KUBE-SEP chains, the stale SEP
  chain deleted. iptables-nft and iptables-legacy.
- kube-proxy iptables full: the same restore with every service's chains (before 1.27, and
  every full resync since).
- kube-proxy nftables: `nft -f` of the incremental transaction (the changed service's chains).
  For all three, only the kernel update is timed: the rule text is made before the clock by this
  script (Python; shown as `gen`), and kube-proxy's own computation in Go is not included.
- meshctl end-to-end: from the changed desired state (Service and Pod models, as the loader makes
  them) to the datapath updated, what `meshctl plan` + `apply` do for the load balancer:
  compile (compile_load_balancer: backends, ids, a Maglev table per service), observe (read every
  LB map: lb_maps.read_raw + decode_state), diff (plan.diff.diff_node, then plan.patch
  .apply_changes to the target, as apply does) and write (lb_maps.write). Maglev on, table size
  `--maglev-table-size` (default 16381, Cilium's default). Not included: loading YAML, policy
  compile and observe of the rest of the node, fingerprints, the plan file, apply's journal
  and verification. GC handling as in meshctl: paused for observe and diff, not for compile.
- meshctl in-process write: lb_maps.write of the planned change only (the diff computed before
  the clock): new backend, the service entry, its slots and a new Maglev table swapped in.

meshctl's pod-churn path in the per-node agent does not exist yet: it has no row.
When the end-to-end path is projected above `--e2e-budget` seconds at a size (from the last
measured size: compile quadratic, the rest linear), it is skipped there and said so; the maps
are then filled with a state built directly (same shape) for the in-process row.

Connect: TCP connect + first reply line to the first and the last service's ClusterIP, median.

Run as root: .venv/bin/python bench/kubeproxy_bench.py [--sizes 1000,5000,20000] [--connects 200]
             [--modes iptables-nft,iptables-legacy,nftables] [--maglev-table-size 16381]
             [--e2e-budget 300] [--json OUT]
"""

from __future__ import annotations

import argparse
import json
import os
import socket
import statistics
import sys
import time
from dataclasses import dataclass, replace
from ipaddress import IPv4Address
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))
sys.path.insert(0, str(Path(__file__).resolve().parent))

import kubeproxy_baseline as kp

from meshctl.compile.maglev import maglev_table
from meshctl.compile.services import LbNode, backend_key, compile_load_balancer, settings_text, stable_ids
from meshctl.dataplane import lb_maps
from meshctl.dataplane.maps import EndpointsMap
from meshctl.dataplane.node import NodeDatapath
from meshctl.gcpause import paused_gc
from meshctl.lab.netns import entered
from meshctl.model.config import LoadBalancerSettings
from meshctl.model.inventory import ContainerPort, Pod
from meshctl.model.service import Service, ServicePort
from meshctl.nodestate import (
    PROTO_TCP,
    EndpointEntry,
    FrozenMap,
    LbBackendEntry,
    LbFrontend,
    LbService,
    LoadBalancerState,
    NodeState,
)
from meshctl.plan.diff import diff_node
from meshctl.plan.patch import apply_changes

NODE_NS, CLIENT_NS, BACKEND_NS = "mc-bench-lb", "mc-bench-lbc", "mc-bench-lbb"
CLUSTER, NODE, OTHER_NODE = "bench-lb", "n1", "n2"
REAL_APP = "bench-real"  # the label of the backend pods that really answer
PHASES = ("compile", "observe", "diff", "write")


def _delete() -> None:
    kp._delete_netns((CLIENT_NS, BACKEND_NS, NODE_NS))


def _topology(backends: int) -> list[str]:
    """The baseline's topology under our netns names, plus the node's route to the client endpoint."""
    real = kp._topology(backends, NODE_NS, CLIENT_NS, BACKEND_NS)
    kp._ip(NODE_NS, "route", "add", f"{kp.CLIENT_IP}/32", "dev", "c0")
    return real


def _pod(name: str, app: str, ip: str, port: int, node: str) -> Pod:
    return Pod(namespace=kp.NAMESPACE, name=name, labels={"app": app}, node_name=node,
               ports=(ContainerPort(name="http", container_port=port),), pod_ip=IPv4Address(ip))


def desired_state(specs: list[kp.ServiceSpec], real_ips: list[str]) -> tuple[list[Service], list[Pod]]:
    """The baseline's services as meshctl's models: one Service per spec, one Pod per endpoint.

    Every service sends to the named port `http` of its pods, except the first, whose targetPort
    is the number 8080: the first and the last service share the real backend pods, and a
    changed `http` port of one of them then moves the last service's endpoint only, exactly as
    the baseline moves it.
    """
    last = len(specs) - 1
    services, pods = [], []
    for s in specs:
        real = s.index in (0, last)
        services.append(Service(
            namespace=kp.NAMESPACE, name=s.name, cluster_ip=IPv4Address(s.vip),
            ports=(ServicePort(name="http", port=s.port,
                               target_port=kp.PORTS[0] if s.index == 0 else "http"),),
            selector={"app": REAL_APP if real else s.name}))
        if not real:
            for j, ep in enumerate(s.endpoints):
                ip, port = ep.split(":")
                pods.append(_pod(f"{s.name}-{j}", s.name, ip, int(port), OTHER_NODE))
    pods += [_pod(f"real-{j}", REAL_APP, ip, kp.PORTS[0], NODE) for j, ip in enumerate(real_ips)]
    return services, pods


def moved(pods: list[Pod], port: int) -> list[Pod]:
    """The desired state after the change: backend pod real-0 now serves `http` on `port`."""
    return [p.model_copy(update={"ports": (ContainerPort(name="http", container_port=port),)})
            if p.name == "real-0" else p for p in pods]


class DirectState:
    """The compiler's output built straight from the specs (same ids, tables and shape), for sizes
    whose end-to-end path is skipped: it fills the maps for the in-process row without compile's
    services x pods selector matching. Maglev tables are kept per backend set and ids, so the
    changed state shares every unchanged table with the first (memory: 20,000 x 16,381 slots)."""

    def __init__(self, settings: LoadBalancerSettings) -> None:
        self.settings = settings
        self.tables: dict[tuple[tuple[str, ...], tuple[int, ...]], tuple[int, ...]] = {}

    def state(self, specs: list[kp.ServiceSpec]) -> LoadBalancerState:
        def backend(ep: str) -> LbBackendEntry:
            ip, port = ep.split(":")
            return LbBackendEntry(IPv4Address(ip), int(port), PROTO_TCP)

        bids = stable_ids(backend_key(backend(ep)) for s in specs for ep in s.endpoints)
        sids = stable_ids(f"{s.vip}:{s.port}/TCP" for s in specs)
        svcs, bes = {}, {}
        for s in specs:
            keys = tuple(sorted(backend_key(backend(ep)) for ep in s.endpoints))
            ids = tuple(bids[k] for k in keys)
            table = self.tables.get((keys, ids))
            if table is None:
                slots = maglev_table(keys, self.settings.maglev_table_size, self.settings.maglev_hash_seed)
                table = self.tables[keys, ids] = tuple(ids[i] for i in slots)
            svcs[LbFrontend(IPv4Address(s.vip), s.port, PROTO_TCP)] = LbService(
                sids[f"{s.vip}:{s.port}/TCP"], ids, table, name=f"{kp.NAMESPACE}/{s.name}")
            bes.update((bids[backend_key(backend(ep))], backend(ep)) for ep in s.endpoints)
        return LoadBalancerState(enabled=True, snat_address=IPv4Address(kp.BACKEND_GW),
                                 settings=settings_text(self.settings), services=FrozenMap(svcs),
                                 backends=FrozenMap(bes))


def connect_once(vip: str, port: int = 80, timeout: float = 2.0) -> str:
    """One TCP connection from the client netns to a ClusterIP; the backend's reply (its port)."""
    with entered(CLIENT_NS):
        sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
    try:
        sock.settimeout(timeout)
        sock.connect((vip, port))
        return kp._read_line(sock)
    finally:
        sock.close()


def reaches(vip: str, port: int, tries: int = 30) -> None:
    """Some connection to `vip` lands on the moved endpoint (now on `port`): the change is live.
    The other backend still answers 8080 and Maglev picks per connection, hence several tries."""
    seen = {connect_once(vip) for _ in range(tries)}
    if str(port) not in seen:
        raise RuntimeError(f"{vip}: {tries} connections answered from {sorted(seen)}, none from {port}")


def _other_port(port: int) -> int:
    return kp.PORTS[1] if port == kp.PORTS[0] else kp.PORTS[0]


def _only(state: LoadBalancerState, fe: LbFrontend, backends: set[int]) -> LoadBalancerState:
    return replace(state, services=FrozenMap({fe: state.services[fe]}),
                   backends=FrozenMap({i: state.backends[i] for i in backends}))


class MeshctlLb:
    """The meshctl side of one size: topology, server, datapath, every service in the LB maps."""

    def __init__(self, n: int, backends: int, table_size: int, compiled: bool = True) -> None:
        self.server_pid: int | None = None
        self.dp = NodeDatapath(CLUSTER, NODE, NODE_NS)
        try:
            self._setup(n, backends, table_size, compiled)
        except BaseException:
            self.close()
            raise

    def _setup(self, n: int, backends: int, table_size: int, compiled: bool) -> None:
        real = _topology(backends)
        self.specs = kp.make_services(n, backends, (0, n - 1), real)
        self.server_pid = kp._start_server(BACKEND_NS)
        self.dp.remove()
        self.dp.ensure_loaded()
        with EndpointsMap.from_dir(self.dp.pin_dir) as eps:
            eps.upsert({IPv4Address(kp.CLIENT_IP): EndpointEntry(1, 1001, False, False)})
        self.dp.attach("c0", kp.CLIENT_IP)
        self.settings = LoadBalancerSettings(kube_proxy_replacement=True, algorithm="maglev",
                                             maglev_table_size=table_size)
        # No underlay device: ClusterIP traffic is translated at the client's veth.
        self.node = LbNode(NODE, IPv4Address(kp.BACKEND_GW), interface="")
        self.services, self.pods = desired_state(self.specs, real)
        self.port = kp.PORTS[0]
        self.direct = None if compiled else DirectState(self.settings)
        start = time.perf_counter()
        self.state = self._compile(self.pods) if compiled else self._direct()
        lb_maps.write(self.dp.pin_dir, LoadBalancerState(), self.state)
        self.build_s = time.perf_counter() - start
        self.previous: LoadBalancerState | None = None

    def _compile(self, pods: list[Pod]) -> LoadBalancerState:
        return compile_load_balancer(self.services, pods, [self.node], self.settings)[NODE]

    def _direct(self) -> LoadBalancerState:
        assert self.direct is not None
        return self.direct.state(self.specs)

    @property
    def last(self) -> LbFrontend:
        s = self.specs[-1]
        return LbFrontend(IPv4Address(s.vip), s.port, PROTO_TCP)

    def end_to_end(self) -> dict[str, float]:
        """One endpoint change through compile, observe, diff and write; seconds per phase.

        The changed desired state (the pod list with real-0's port moved) is made before the clock.
        """
        port = _other_port(self.port)
        pods = moved(self.pods, port)
        t0 = time.perf_counter()
        target = self._compile(pods)
        t1 = time.perf_counter()
        with paused_gc():  # as LabBackend.observe_many
            observed = lb_maps.decode_state(lb_maps.read_raw(self.dp.pin_dir, self.dp.netdev_interface()))
        t2 = time.perf_counter()
        with paused_gc():  # as plan.build_plan
            before = NodeState(NODE, load_balancer=observed)
            changes = diff_node(before, NodeState(NODE, load_balancer=target))
            planned = apply_changes(before, changes).load_balancer
        t3 = time.perf_counter()
        lb_maps.write(self.dp.pin_dir, observed, planned)
        t4 = time.perf_counter()
        if planned != target or len(changes) > 3:
            raise RuntimeError(f"one endpoint change planned as {len(changes)} changes, or off target")
        self.previous, self.state, self.pods, self.port = self.state, target, pods, port
        reaches(self.specs[-1].vip, port)
        phases = dict(zip(PHASES, (t1 - t0, t2 - t1, t3 - t2, t4 - t3), strict=True))
        return phases | {"changes": len(changes)}

    def prepare_in_process(self) -> None:
        """A directly filled size has no previous state yet: build the changed one (off the clock)."""
        if self.previous is not None:
            return
        spec = self.specs[-1]
        original = spec.endpoints[0]
        ip, port = original.split(":")
        spec.endpoints[0] = f"{ip}:{_other_port(int(port))}"
        self.previous = self._direct()
        spec.endpoints[0] = original

    def _write_change(self, old_full: LoadBalancerState, new_full: LoadBalancerState) -> float:
        """lb_maps.write of the planned change only: the last service and its backends."""
        fe = self.last
        old_s, new_s = old_full.services[fe], new_full.services[fe]
        cur = _only(old_full, fe, set(old_s.backends))
        # What the plan holds: a backend another service still uses is not removed.
        tgt = _only(new_full, fe, {i for i in old_s.backends if i in new_full.backends} | set(new_s.backends))
        start = time.perf_counter()
        lb_maps.write(self.dp.pin_dir, cur, tgt)
        return time.perf_counter() - start

    def in_process(self, count: int = 6) -> float:
        """Median seconds of `count` (even) in-process writes toggling the endpoint back and forth."""
        self.prepare_in_process()
        assert self.previous is not None
        samples = []
        for _ in range(count):
            samples.append(self._write_change(self.state, self.previous))
            self.previous, self.state = self.state, self.previous
            self.port = _other_port(self.port)
        reaches(self.specs[-1].vip, self.port)
        return statistics.median(samples)

    def connect_latency(self, count: int, which: str) -> dict[str, float]:
        return kp._connect_latency(CLIENT_NS, self.specs[0 if which == "first" else -1], count)

    def close(self) -> None:
        if self.server_pid is not None:
            kp._stop_server(self.server_pid)
            self.server_pid = None
        self.dp.remove()
        _delete()


@dataclass
class Projection:
    """The last measured end-to-end phases, to project the next size."""

    services: int
    phases: dict[str, float]

    def at(self, n: int) -> float:
        k = n / self.services
        return self.phases["compile"] * k * k + sum(self.phases[p] for p in PHASES[1:]) * k


def meshctl_rows(n: int, backends: int, connects: int, table_size: int, budget: float,
                 last: Projection | None) -> tuple[list[dict[str, object]], Projection | None]:
    projected = last.at(n) if last is not None else 0.0
    run_e2e = projected <= budget
    if not run_e2e:
        print(f"meshctl end-to-end {n:>6}  skipped: projected ~{projected:.0f} s "
              f"(> --e2e-budget {budget:.0f} s)", flush=True)
    lb = MeshctlLb(n, backends, table_size, compiled=run_e2e)
    try:
        rows: list[dict[str, object]] = []
        common = {"services": n, "build_ms": lb.build_s * 1e3, "maglev": table_size}
        if run_e2e:
            runs = [lb.end_to_end()]
            if sum(runs[0][p] for p in PHASES) < 10:
                runs += [lb.end_to_end() for _ in range(2)]
            total = [sum(r[p] for p in PHASES) for r in runs]
            mid = runs[total.index(statistics.median(total))] if len(runs) > 1 else runs[0]
            phases = {p: mid[p] for p in PHASES}
            rows.append({"mode": "meshctl-e2e", **common, "change_ms": sum(phases.values()) * 1e3,
                         "phases_ms": {p: v * 1e3 for p, v in phases.items()}, "runs": len(runs),
                         "changes": mid["changes"]})
            last = Projection(n, phases)
        else:
            rows.append({"mode": "meshctl-e2e", **common, "skipped": True, "projected_s": projected})
        rows.append({"mode": "meshctl-inproc", **common, "change_ms": lb.in_process() * 1e3})
        first, last_lat = lb.connect_latency(connects, "first"), lb.connect_latency(connects, "last")
        for r in rows:
            r["connect_first"], r["connect_last"] = first, last_lat
        return rows, last
    finally:
        lb.close()


LABELS = {
    "iptables-nft": "kube-proxy iptables-nft", "iptables-legacy": "kube-proxy iptables-legacy",
    "nftables": "kube-proxy nftables", "meshctl-e2e": "meshctl end-to-end",
    "meshctl-inproc": "meshctl in-process",
}


def table_rows(base_rows: list[dict[str, object]], ours: list[dict[str, object]]) -> list[dict[str, object]]:
    """One line per (path, variant) in display order: partial before full, meshctl last."""
    out: list[dict[str, object]] = []
    for r in base_rows:
        if r.get("skipped"):
            out.append({**r, "label": f"{LABELS[str(r['mode'])]} (skipped)"})
            continue
        if "change_partial_ms" in r:
            out.append({**r, "label": f"{LABELS[str(r['mode'])]} partial restore",
                        "ms": r["change_partial_ms"], "gen_ms": r["gen_partial_ms"]})
            out.append({**r, "label": f"{LABELS[str(r['mode'])]} full restore", "ms": r["change_ms"]})
        else:
            out.append({**r, "label": f"{LABELS[str(r['mode'])]} incremental", "ms": r["change_ms"]})
    for r in ours:
        out.append({**r, "label": LABELS[str(r["mode"])] + (" (skipped)" if r.get("skipped") else ""),
                    "ms": r.get("change_ms")})
    return out


def print_table(n: int, rows: list[dict[str, object]]) -> None:
    e2e = next((r["ms"] for r in rows if r["mode"] == "meshctl-e2e" and not r.get("skipped")), None)
    inproc = next(r["ms"] for r in rows if r["mode"] == "meshctl-inproc")
    for r in rows:
        if r.get("skipped"):
            proj = r.get("projected_s") or r.get("projected_build_s")
            print(f"{n:>6} {r['label']!s:40} skipped, projected ~{float(proj or 0):.0f} s")  # type: ignore[arg-type]
            continue
        ms = float(r["ms"])  # type: ignore[arg-type]
        first, last = r["connect_first"], r["connect_last"]
        assert isinstance(first, dict) and isinstance(last, dict)
        vs_e2e = f"{ms / float(e2e):9.3f}" if e2e else "        -"  # type: ignore[arg-type]
        gen = f"{float(r['gen_ms']):8.1f}" if "gen_ms" in r else "       -"  # type: ignore[arg-type]
        print(f"{n:>6} {r['label']!s:40} {ms:11.3f} {gen} {vs_e2e} {ms / float(inproc):10.2f} "  # type: ignore[arg-type]
              f"{first['median_us']:7.0f} {last['median_us']:7.0f}", flush=True)
    for r in rows:
        if r["mode"] == "meshctl-e2e" and not r.get("skipped"):
            ph = r["phases_ms"]
            assert isinstance(ph, dict)
            print(f"{n:>6} meshctl end-to-end phases (ms): " + ", ".join(f"{p} {ph[p]:.1f}" for p in PHASES)
                  + f"; {r['changes']} plan changes; median of {r['runs']} run(s)", flush=True)


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--sizes", default="1000,5000,20000")
    ap.add_argument("--backends", type=int, default=2)
    ap.add_argument("--modes", default=",".join(kp.MODES))
    ap.add_argument("--connects", type=int, default=200)
    ap.add_argument("--budget", type=float, default=30.0,
                    help="kube-proxy: skip a mode at a size whose build is projected above this")
    ap.add_argument("--maglev-table-size", type=int, default=16381)
    ap.add_argument("--e2e-budget", type=float, default=300.0,
                    help="skip meshctl's end-to-end path at a size projected above this many seconds")
    ap.add_argument("--json", type=Path, help="write every row here")
    a = ap.parse_args(argv)
    if os.geteuid() != 0:
        print("needs root (network namespaces, BPF, iptables)", file=sys.stderr)
        return 1
    wall = time.perf_counter()
    sizes = sorted(int(s) for s in a.sizes.split(",") if s)
    modes = [m for m in a.modes.split(",") if m in kp.available_modes()]
    print(f"kube-proxy baseline (kernel update only; rule text made before the clock), Maglev table "
          f"{a.maglev_table_size} for meshctl")
    base_rows = kp.run(sizes, a.backends, modes, a.connects, a.budget)
    everything: list[dict[str, object]] = []
    last: Projection | None = None
    for n in sizes:
        ours, last = meshctl_rows(n, a.backends, a.connects, a.maglev_table_size, a.e2e_budget, last)
        rows = table_rows([r for r in base_rows if r["services"] == n], ours)
        everything += rows
        print()
        print(f"{'size':>6} {'path':40} {'change ms':>11} {'gen ms':>8} {'/ e2e':>9} {'/ inproc':>10} "
              f"{'1st us':>7} {'last us':>7}")
        print_table(n, rows)
    elapsed = time.perf_counter() - wall
    print(f"\nwall time {elapsed:.0f} s")
    if a.json:
        a.json.write_text(json.dumps({"wall_s": elapsed, "argv": sys.argv, "rows": everything}, indent=1,
                                     default=str))
    return 0


if __name__ == "__main__":
    sys.exit(main())
