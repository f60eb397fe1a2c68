"""`meshctl ui` under a flood: 10,000 flows/s arriving in a store, followed by one page's view.

A writer thread stores flows at the given rate (batches every 0.1 s, enriched like the agent's,
over 200 pods and 5 ports, so the map has about as many edges as a busy namespace); the view is
followed exactly as `/api/events` does it (poll the store every 0.2 s, send the changed edges as
JSON every 0.5 s). Printed: flows stored and aggregated, the messages' size, and the process's
resident memory halfway and at the end; the same run at a tenth of the rate is the baseline.
Memory is bounded by the distinct connections (each edge keeps counts and RECENT short rows):
once they are all seen, "flat" means the end/half ratio stays near 1.

Run: `.venv/bin/python bench/ui_bench.py [--seconds 20] [--rate 10000]`.
"""

from __future__ import annotations

import argparse
import json
import random
import socket
import tempfile
import threading
import time
from pathlib import Path

from meshctl.catalog import Catalog
from meshctl.flows.enrich import EVENT, EnrichContext, Enricher
from meshctl.flows.store import FlowStore, store_path
from meshctl.ui.server import POLL_EVERY_S, PUSH_EVERY_S, UiApp, UiSettings

PODS = 200
PORTS = (80, 443, 5432, 6379, 8080)


def rss_mib() -> float:
    for line in Path("/proc/self/status").read_text().splitlines():
        if line.startswith("VmRSS:"):
            return int(line.split()[1]) / 1024
    return 0.0


def writer(state_dir: Path, rate: int, stop: threading.Event, stored: list[int]) -> None:
    ips = [f"10.1.{i // 250}.{i % 250 + 1}" for i in range(PODS)]
    pods = {ip: f"ns{i % 10}/app{i % 40}-{i}" for i, ip in enumerate(ips)}
    rng = random.Random(1)
    with FlowStore(store_path(state_dir, "n1"), "n1") as store:
        enricher = Enricher(EnrichContext("n1", Catalog(), pods), store.dims)
        batch = max(1, rate // 10)
        next_at = time.monotonic()
        while not stop.is_set():
            now_ns = time.clock_gettime_ns(time.CLOCK_BOOTTIME)
            raw = b"".join(
                EVENT.pack(now_ns + i, socket.inet_aton(rng.choice(ips)), socket.inet_aton(rng.choice(ips)),
                           socket.htons(30000 + i % 30000), socket.htons(rng.choice(PORTS)), 6, 0,
                           rng.choice((1, 1, 1, 2, 4)), 0, 256, 257, 1, 0, 2, 60)
                for i in range(batch))
            store.insert(enricher.rows(raw))
            stored[0] += batch
            next_at += 0.1
            time.sleep(max(0.0, next_at - time.monotonic()))


def run(rate: int, seconds: float) -> dict[str, float]:
    with tempfile.TemporaryDirectory(prefix="mc-ui-bench-") as tmp:
        state_dir = Path(tmp)
        store_path(state_dir, "n1").parent.mkdir(parents=True)
        FlowStore(store_path(state_dir, "n1"), "n1").close()
        app = UiApp(UiSettings(state_dir, "bench", since="1h"))
        view = app.view(app.new_view({})["view"])
        stop, stored = threading.Event(), [0]
        thread = threading.Thread(target=writer, args=(state_dir, rate, stop, stored), daemon=True)
        thread.start()
        sent_bytes = messages = 0
        half = 0.0
        started = last_push = time.monotonic()
        with FlowStore(store_path(state_dir, "n1"), "n1", readonly=True) as store:
            while time.monotonic() - started < seconds:
                app.poll(view, [store])
                if time.monotonic() - last_push >= PUSH_EVERY_S:
                    changes = view.map.take_changes()
                    if changes:
                        sent_bytes += len(json.dumps(changes))
                        messages += 1
                    last_push = time.monotonic()
                if not half and time.monotonic() - started >= seconds / 2:
                    half = rss_mib()
                time.sleep(POLL_EVERY_S)
            stop.set()
            thread.join()
            app.poll(view, [store])
        end = rss_mib()
        return {"stored": stored[0], "aggregated": view.map.flows, "edges": len(view.map.edges),
                "messages": messages, "kib_per_message": sent_bytes / 1024 / max(messages, 1),
                "half_mib": half, "end_mib": end}


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--seconds", type=float, default=40.0)
    ap.add_argument("--rate", type=int, default=10_000, help="flows per second stored")
    args = ap.parse_args()
    print(f"{'rate/s':>8}{'stored':>10}{'aggregated':>12}{'edges':>7}{'msgs':>6}{'KiB/msg':>9}"
          f"{'RSS half':>10}{'RSS end':>9}{'end/half':>9}")
    for rate in (args.rate // 10, args.rate):
        r = run(rate, args.seconds)
        print(f"{rate:>8,}{r['stored']:>10,}{r['aggregated']:>12,}{r['edges']:>7,}{r['messages']:>6}"
              f"{r['kib_per_message']:>9.1f}{r['half_mib']:>8.1f} M{r['end_mib']:>7.1f} M"
              f"{r['end_mib'] / r['half_mib']:>9.2f}")


if __name__ == "__main__":
    main()
