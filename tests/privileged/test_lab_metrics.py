"""The lab's flow agents serve /metrics in Hubble's shapes, from real traffic and a real apply.

Three-tier copy, `meshctl lab up` (agents with metrics ports), real connections before and after
the first apply, one drift check; then one scrape of node-1's agent (demo/frontend's node).
"""

from __future__ import annotations

import time
import urllib.error
import urllib.request
from collections.abc import Iterator
from pathlib import Path

import pytest
from apply_helpers import cli_lab, connect, example_copy, meshctl, unique_cluster
from prometheus_client.parser import text_string_to_metric_families

from meshctl.lab import datapath

pytestmark = pytest.mark.privileged

if not datapath.available():
    pytest.skip("meshctl.dataplane.node not available", allow_module_level=True)

CLUSTER = unique_cluster("t-met")
BASE_PORT = 19690  # node-1's agent; node-2 and node-3 take the next two

Samples = list[tuple[str, dict[str, str], float]]


def scrape(port: int = BASE_PORT, timeout: float = 10.0) -> tuple[str, Samples]:
    """One scrape; the agent may still be starting (lab up does not wait for it)."""
    deadline = time.monotonic() + timeout
    while True:
        try:
            text = urllib.request.urlopen(f"http://127.0.0.1:{port}/metrics", timeout=5).read().decode()
            break
        except urllib.error.URLError:
            if time.monotonic() > deadline:
                raise
            time.sleep(0.2)
    families = text_string_to_metric_families(text)
    return text, [(s.name, s.labels, s.value) for f in families for s in f.samples]


def value(samples: Samples, name: str, **labels: str) -> float:
    return sum(v for n, lab, v in samples if n == name and all(lab.get(k) == x for k, x in labels.items()))


@pytest.fixture(scope="module")
def repo(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Path]:
    dest = tmp_path_factory.mktemp("metrics") / "three-tier"
    with cli_lab(example_copy("three-tier", dest, CLUSTER, metrics_base_port=BASE_PORT)):
        yield dest


def wait_for_metric(name: str, at_least: float, timeout: float = 5.0, **labels: str) -> Samples:
    deadline = time.monotonic() + timeout
    while True:
        _, samples = scrape()
        if value(samples, name, **labels) >= at_least or time.monotonic() > deadline:
            return samples
        time.sleep(0.2)


def test_metrics_follow_hubble_shapes_through_lab_up_apply_and_drift(repo: Path) -> None:
    # before any apply: no policy selects frontend, its new connection is an allow-all verdict
    assert connect(CLUSTER, "demo/frontend", "demo/api", 3000)
    allow_all = {"direction": "egress", "match": "all", "action": "forwarded"}
    samples = wait_for_metric("meshctl_policy_verdicts_total", 1, **allow_all)
    assert value(samples, "meshctl_policy_verdicts_total", **allow_all) >= 1

    applied = meshctl(repo, "apply", "--auto-approve", timeout=180)
    assert applied.returncode == 0, applied.stdout + applied.stderr
    assert connect(CLUSTER, "demo/frontend", "demo/api", 3000)  # frontend-to-api: toEndpoints + toPorts
    assert not connect(CLUSTER, "demo/frontend", "demo/database", 5432)  # default deny at frontend egress
    drift = meshctl(repo, "drift", timeout=120)
    assert drift.returncode == 0, drift.stdout + drift.stderr

    denied = {"reason": "POLICY_DENIED", "protocol": "TCP", "direction": "egress"}
    wait_for_metric("meshctl_drop_total", 1, **denied)
    text, samples = scrape()
    assert value(samples, "meshctl_drop_total", **denied) >= 1
    assert value(samples, "meshctl_policy_verdicts_total", direction="egress", match="l3-l4",
                 action="forwarded") >= 1
    assert value(samples, "meshctl_policy_verdicts_total", direction="egress", match="none",
                 action="dropped") >= 1
    matches = {lab["match"] for n, lab, _ in samples if n == "meshctl_policy_verdicts_total"}
    assert "unknown" not in matches, matches
    assert 'node="' not in text and "# TYPE meshctl_flow_events_lost_total counter" in text

    # apply and drift ran in other processes: their totals and durations are the state's
    assert value(samples, "meshctl_apply_total", result="success") == 1
    assert value(samples, "meshctl_drift_total", result="clean") == 1
    assert value(samples, "meshctl_apply_duration_seconds_count") == 1
    assert value(samples, "meshctl_apply_duration_seconds_sum") > 0

    maps = {lab["map_name"]: v for n, lab, v in samples if n == "meshctl_bpf_map_pressure"}
    assert {"endpoints", "ipcache", "policy_maps", "ct"} <= set(maps), maps
    assert all(0 <= v <= 1 for v in maps.values()) and maps["ct"] > 0 and maps["endpoints"] > 0
    assert value(samples, "meshctl_bpf_map_entries", map_name="endpoints") == 2  # frontend, kube-dns
    assert value(samples, "meshctl_build_info") == 1 and value(samples, "process_cpu_seconds_total") > 0


def test_map_pressure_counts_real_pinned_maps_in_batches(tmp_path: Path) -> None:
    import os
    import shutil

    from meshctl.dataplane.libbpf import BPF_MAP_TYPE_ARRAY, BPF_MAP_TYPE_HASH, BPF_MAP_TYPE_LPM_TRIE, Map
    from meshctl.flows.mapstats import MapPressure

    pins = Path("/sys/fs/bpf/meshctl") / f"t-mapstats-{os.getpid()}"
    pins.mkdir(parents=True)
    try:
        n = 200_000
        with Map.create(BPF_MAP_TYPE_HASH, 4, 8, 262144, name="ct") as m:
            keys = [i.to_bytes(4, "little") for i in range(n)]
            m.update_batch(keys, [b"\0" * 8] * n)
            m.pin(pins / "ct")
        with Map.create(BPF_MAP_TYPE_LPM_TRIE, 8, 4, 1024, flags=1, name="ipcache") as m:  # NO_PREALLOC
            for i in range(3):
                m.update((32).to_bytes(4, "little") + bytes([10, 0, 0, i]), b"\0" * 4)
            m.pin(pins / "ipcache")
        with Map.create(BPF_MAP_TYPE_ARRAY, 4, 4, 16, name="config") as m:
            m.pin(pins / "config")
        t0 = time.monotonic()
        fills = {f.name: f for f in MapPressure(pins).read()}
        took = time.monotonic() - t0
        assert set(fills) == {"ct", "ipcache"}  # an array is always full: not a pressure
        assert (fills["ct"].entries, fills["ct"].capacity) == (n, 262144)
        assert (fills["ipcache"].entries, fills["ipcache"].capacity) == (3, 1024)
        print(f"\nmap pressure of 200k entries: {took * 1000:.0f} ms")
        assert took < 1.0
    finally:
        shutil.rmtree(pins, ignore_errors=True)
