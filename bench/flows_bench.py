"""Flow agent throughput and flow store query time.

1. Events per second one agent stores without loss: a pinned test node (meshctl.flows.loadgen)
   drops real frames with BPF_PROG_TEST_RUN (each drop = one ringbuf event) at a paced rate,
   while `meshctl agent` (its own process) consumes them. Prints generated, stored and the
   agent's lost-event counter (datapath drop counter - drop events received).
2. `--last 1000` over 1,000,000 stored flows (store filled directly with synthetic rows).

Run as root: .venv/bin/python bench/flows_bench.py [--rate 120000] [--seconds 5] [--runs 5]
[--rows 1000000]. The machine is shared and noisy: each throughput run is repeated and the min
and median are printed.
"""

from __future__ import annotations

import argparse
import re
import subprocess
import sys
import tempfile
import time
import urllib.request
from pathlib import Path

from meshctl.flows.filters import FlowFilter
from meshctl.flows.loadgen import TestNode
from meshctl.flows.store import FlowStore

CLUSTER, NODE, PORT = "t-fl-bench", "n1", 19693
MESHCTL = str(Path(sys.executable).parent / "meshctl")


def scrape(port: int) -> dict[str, float]:
    text = urllib.request.urlopen(f"http://127.0.0.1:{port}/metrics", timeout=5).read().decode()
    out: dict[str, float] = {}
    for line in text.splitlines():
        m = re.match(r"^(meshctl_flow_\w+)(?:\{[^}]*\})? ([0-9.e+-]+)$", line)
        if m:
            out[m.group(1)] = float(m.group(2))
    return out


def throughput(rate: int, seconds: float, burst: int) -> tuple[float, float, int]:
    """One run: (offered events/s, stored events/s, lost)."""
    node = TestNode(CLUSTER, NODE).up()
    tmp = Path(tempfile.mkdtemp(prefix="mc-fl-bench-"))
    db = tmp / f"{NODE}.db"
    log = (tmp / "agent.log").open("w")
    agent = subprocess.Popen([MESHCTL, "agent", "--node", NODE, "--cluster", CLUSTER, "--store", str(db),
                              "--metrics-port", str(PORT)], stderr=log)
    try:
        deadline = time.monotonic() + 10
        while True:
            try:
                scrape(PORT)
                break
            except OSError:
                if time.monotonic() > deadline:
                    raise
                time.sleep(0.1)
        time.sleep(0.5)  # the agent opens the ring right after its metrics endpoint
        generated, interval = 0, burst / rate
        start = time.monotonic()
        next_at = start
        while time.monotonic() - start < seconds:
            node.drop(repeat=burst)
            generated += burst
            next_at += interval
            pause = next_at - time.monotonic()
            if pause > 0:
                time.sleep(pause)
        gen_s = time.monotonic() - start
        m = scrape(PORT)
        done_s = time.monotonic() - start
        last_change = time.monotonic()
        stored = m.get("meshctl_flow_events_stored_total", 0)
        while stored < generated and time.monotonic() - last_change < 1.5:  # stop when no progress
            time.sleep(0.05)
            now_stored = scrape(PORT).get("meshctl_flow_events_stored_total", 0)
            if now_stored != stored:
                stored, last_change, done_s = now_stored, time.monotonic(), time.monotonic() - start
        time.sleep(1.2)  # one lost-event check after the ring is drained
        m = scrape(PORT)
        stored = int(m.get("meshctl_flow_events_stored_total", 0))
        lost = int(m.get("meshctl_flow_events_lost_total", 0))
        print(f"offered {generated} events in {gen_s:.2f}s ({generated / gen_s:,.0f}/s); "
              f"stored {stored} after {done_s:.2f}s ({stored / done_s:,.0f}/s); lost {lost}", flush=True)
        return generated / gen_s, stored / done_s, max(lost, generated - stored)
    finally:
        agent.terminate()
        agent.wait(10)
        log.close()
        peak = [ln for ln in (tmp / "agent.log").read_text().splitlines() if "peak fill" in ln]
        print("   ", peak[-1].split(": ", 1)[-1] if peak else "(no peak fill logged)")
        for ln in (tmp / "agent.log").read_text().splitlines():
            if "rror" in ln or "Trace" in ln or "warn" in ln.lower():
                print("    agent:", ln)
        node.remove()
        for p in tmp.iterdir():
            p.unlink()
        tmp.rmdir()


def fill(store: FlowStore, rows: int) -> float:
    """Synthetic flows, 50 pods in 7 namespaces, 1 in 5 dropped; returns rows/s."""
    t0 = time.time_ns() - rows * 1000
    peers = [store.dims.peer(f"10.0.0.{i}", 300 + i % 10, f"ns{i % 7}/pod{i}",
                             f",k8s:app=a{i % 10},k8s:io.kubernetes.pod.namespace=ns{i % 7},")
             for i in range(50)]
    attrs = [store.dims.attribution("", ""), store.dims.attribution("", "CiliumNetworkPolicy ns1/isolate")]
    batch = 50_000
    start = time.monotonic()
    for base in range(0, rows, batch):
        store.insert([
            (t0 + (base + i) * 1000, 2 if i % 5 == 0 else 1, 2 if i % 5 == 0 else 0, i % 2, 6,
             40000 + i % 1000, 5432, 2, 60, 0, peers[i % 50], peers[(i + 1) % 50], attrs[i % 5 == 0])
            for i in range(min(batch, rows - base))
        ])
    return rows / (time.monotonic() - start)


def query_time(rows: int) -> None:
    with tempfile.TemporaryDirectory(prefix="mc-fl-bench-") as d:
        store = FlowStore(Path(d) / "n1.db", "n1")
        rate = fill(store, rows)
        store.close()
        ro = FlowStore(Path(d) / "n1.db", "n1", readonly=True)
        newest = ro.max_time()
        cases = (
            ("--last 1000", FlowFilter()),
            ("--last 1000 --verdict DROPPED", FlowFilter(verdicts=("DROPPED",))),
            ("--last 1000 --to-pod ns1/pod1", FlowFilter(to_pods=("ns1/pod1",))),
            ("--last 1000 -n ns3 --from-label app=a3",
             FlowFilter(namespaces=("ns3",), from_labels=("app=a3",))),
            ("--last 1000 --to-port 40999 (rare: 1 in 1000)", FlowFilter(ports=(40999,))),
            ("--since (newest 5 ms: 5000 flows)", FlowFilter(since_ns=newest - 5 * 10**6)),
        )
        for label, flt in cases:
            runs = []
            for _ in range(5):
                q = time.perf_counter()
                got = ro.query(flt, last=None if flt.since_ns else 1000)
                runs.append(time.perf_counter() - q)
            print(f"{label} over {rows:,} flows: median {sorted(runs)[2] * 1000:.1f} ms ({len(got)} flows)")
        print(f"(store filled at {rate:,.0f} rows/s)")
        ro.close()


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--rate", type=int, default=120_000)
    ap.add_argument("--runs", type=int, default=3)
    ap.add_argument("--seconds", type=float, default=5.0)
    ap.add_argument("--burst", type=int, default=2000)
    ap.add_argument("--rows", type=int, default=1_000_000)
    args = ap.parse_args()
    results = [throughput(args.rate, args.seconds, args.burst) for _ in range(args.runs)]
    if results:
        stored = sorted(r[1] for r in results)
        print(f"stored events/s over {len(results)} runs: min {stored[0]:,.0f}, median "
              f"{stored[len(stored) // 2]:,.0f}; lost total {sum(r[2] for r in results)}")
    if args.rows:
        query_time(args.rows)


if __name__ == "__main__":
    main()
