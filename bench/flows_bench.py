"""Flow agent throughput and flow store query time.

1. Events per second one agent stores without loss: a pinned test node (meshctl.flows.loadgen)
   drops real frames with BPF_PROG_TEST_RUN (each drop = one ringbuf event) at a paced rate,
   while `meshctl agent` (its own process) consumes them. Prints generated, stored and the
   agent's lost-event counter (datapath drop counter - drop events received).
2. `--last 1000` over 1,000,000 stored flows (store filled directly with synthetic rows).

Run as root: .venv/bin/python bench/flows_bench.py [--rate 100000] [--seconds 5] [--rows 1000000]
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
        m = re.match(r"^(meshctl_flow_events_\w+)\{[^}]*\} ([0-9.e+]+)$", line)
        if m:
            out[m.group(1)] = float(m.group(2))
    return out


def throughput(rate: int, seconds: float, burst: int) -> None:
    node = TestNode(CLUSTER, NODE).up()
    tmp = Path(tempfile.mkdtemp(prefix="mc-fl-bench-"))
    db = tmp / f"{NODE}.db"
    agent = subprocess.Popen([MESHCTL, "agent", "--node", NODE, "--cluster", CLUSTER, "--store", str(db),
                              "--metrics-port", str(PORT)], stderr=subprocess.DEVNULL)
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
        wait_until = time.monotonic() + 30
        m = scrape(PORT)
        while m.get("meshctl_flow_events_stored_total", 0) < generated and time.monotonic() < wait_until:
            time.sleep(0.2)
            m = scrape(PORT)
        done_s = time.monotonic() - start
        time.sleep(1.2)  # one lost-event check after the ring is drained
        m = scrape(PORT)
        stored = int(m.get("meshctl_flow_events_stored_total", 0))
        lost = int(m.get("meshctl_flow_events_lost", 0))
        print(f"offered {generated} events in {gen_s:.2f}s ({generated / gen_s:,.0f}/s); "
              f"stored {stored} after {done_s:.2f}s ({stored / done_s:,.0f}/s); lost {lost}")
    finally:
        agent.terminate()
        agent.wait(10)
        node.remove()
        for p in tmp.iterdir():
            p.unlink()
        tmp.rmdir()


def query_time(rows: int) -> None:
    with tempfile.TemporaryDirectory(prefix="mc-fl-bench-") as d:
        store = FlowStore(Path(d) / "n1.db", "n1")
        t0 = time.time_ns()
        pods = [f"ns{i % 7}/pod{i}" for i in range(50)]
        batch = 50_000
        fill = time.monotonic()
        for base in range(0, rows, batch):
            store.insert([
                (t0 + (base + i) * 1000, 2 if i % 5 == 0 else 1, 2, i % 2, 6, "10.0.0.1", "10.0.0.2",
                 40000, 5432, 300, 400, 2, 60, 0, pods[i % 50], pods[(i + 1) % 50], "ns", "ns",
                 ",k8s:app=a,", ",k8s:app=b,", "", "")
                for i in range(min(batch, rows - base))
            ])
        fill_s = time.monotonic() - fill
        store.close()
        ro = FlowStore(Path(d) / "n1.db", "n1", readonly=True)
        for label, flt in (("--last 1000", FlowFilter()), ("--last 1000 --verdict DROPPED",
                                                          FlowFilter(verdicts=("DROPPED",))),
                           ("--last 1000 --to-pod ns1/pod1", FlowFilter(to_pods=("ns1/pod1",)))):
            runs = []
            for _ in range(5):
                q = time.perf_counter()
                got = ro.query(flt, last=1000)
                runs.append(time.perf_counter() - q)
            print(f"{label} over {rows:,} flows: median {sorted(runs)[2] * 1000:.1f} ms ({len(got)} flows)")
        print(f"(store filled at {rows / fill_s:,.0f} rows/s)")
        ro.close()


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--rate", type=int, default=100_000)
    ap.add_argument("--seconds", type=float, default=5.0)
    ap.add_argument("--burst", type=int, default=2000)
    ap.add_argument("--rows", type=int, default=1_000_000)
    args = ap.parse_args()
    throughput(args.rate, args.seconds, args.burst)
    query_time(args.rows)


if __name__ == "__main__":
    main()
