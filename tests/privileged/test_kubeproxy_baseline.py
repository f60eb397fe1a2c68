"""The kube-proxy baseline bench: real DNAT rules route a ClusterIP, and an endpoint change lands."""

from __future__ import annotations

import importlib.util
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path
from types import ModuleType

import pytest

pytestmark = pytest.mark.privileged

BENCH = Path(__file__).resolve().parents[2] / "bench" / "kubeproxy_baseline.py"


@pytest.fixture(scope="module")
def kp() -> ModuleType:
    spec = importlib.util.spec_from_file_location("kubeproxy_baseline", BENCH)
    assert spec is not None and spec.loader is not None
    mod = importlib.util.module_from_spec(spec)
    sys.modules["kubeproxy_baseline"] = mod
    spec.loader.exec_module(mod)
    return mod


def test_rule_text_is_kube_proxy_shaped(kp: ModuleType) -> None:
    services = kp.make_services(3, 3, (0,), ["10.244.2.2", "10.244.2.3", "10.244.2.4"])
    text = kp.iptables_restore_text(services)
    chain = kp.svc_chain("bench/svc-0:http")
    assert chain.startswith("KUBE-SVC-") and len(chain) == 25
    lines = [ln for ln in text.splitlines() if ln.startswith(f"-A {chain} ") and "KUBE-SEP" in ln]
    assert [ln.split("--probability ")[1].split()[0] for ln in lines[:2]] == ["0.3333333333", "0.5000000000"]
    assert "statistic" not in lines[2]
    assert "-j DNAT --to-destination 10.244.2.2:8080" in text
    assert text.count("-A KUBE-SERVICES ") == 4  # 3 services + the nodeports tail rule


@pytest.mark.parametrize("mode", ["iptables-nft", "iptables-legacy", "nftables"])
def test_dnat_connect_and_endpoint_change(kp: ModuleType, mode: str) -> None:
    if mode not in kp.available_modes():
        pytest.skip(f"{mode} is not installed")
    base = kp.build(50, 1, mode)
    try:
        first, last = base.measured
        assert base.connect_once(first.vip) == "8080"
        assert base.connect_once(last.vip) == "8080"
        # A service with fake endpoints does not answer (DNAT to nowhere), so rules are really used.
        with pytest.raises(OSError):
            base.connect_once(base.services[1].vip, timeout=0.3)
        elapsed = base.time_endpoint_change()
        assert 0 < elapsed < 5
        assert base.connect_once(last.vip) == "8081"
        assert base.connect_once(first.vip) == "8080"
        if mode != "nftables":
            base.time_endpoint_change(partial=True)
            assert base.connect_once(last.vip) == "8080"
            saved = subprocess.run(
                ["nsenter", f"--net=/run/netns/{kp.NODE_NS}", "--",
                 "iptables-nft-save" if mode == "iptables-nft" else "iptables-legacy-save", "-t", "nat"],
                capture_output=True, text=True, check=True).stdout
            # Stale endpoint chains are deleted: one SEP chain per endpoint remains.
            assert saved.count(":KUBE-SEP-") == 50
        lat = base.connect_latency(20, "last")
        assert 0 < lat["median_us"] <= lat["p90_us"]
    finally:
        base.close()
    assert not Path(f"/run/netns/{kp.NODE_NS}").exists()


def test_nft_change_leaves_one_endpoint_chain_per_endpoint(kp: ModuleType) -> None:
    """The timed transaction rewrites the service; the stale endpoint chain goes in a later one."""
    if "nftables" not in kp.available_modes():
        pytest.skip("nftables is not installed")
    with kp.built(20, 1, "nftables") as base:
        base.time_endpoint_change()
        assert base.last_gen_s > 0
        listed = subprocess.run(["nsenter", f"--net=/run/netns/{kp.NODE_NS}", "--", "nft", "list", "table",
                                 "ip", "kube-proxy"], capture_output=True, text=True, check=True).stdout
        assert listed.count("chain endpoint-") == 20
        assert base.connect_once(base.services[-1].vip) == "8081"


@pytest.fixture(scope="module")
def bench(kp: ModuleType) -> ModuleType:
    spec = importlib.util.spec_from_file_location("kubeproxy_bench", BENCH.parent / "kubeproxy_bench.py")
    assert spec is not None and spec.loader is not None
    mod = importlib.util.module_from_spec(spec)
    sys.modules["kubeproxy_bench"] = mod  # its dataclasses resolve annotations through it
    spec.loader.exec_module(mod)
    return mod


def test_meshctl_end_to_end_change_reaches_the_datapath(bench: ModuleType) -> None:
    """compile + observe + diff + write of one moved endpoint, with Maglev: 2-3 plan changes,
    the kernel then sends the last service to the new port and the first one stays on 8080."""
    lb = bench.MeshctlLb(30, 1, 251)
    try:
        first, last = lb.specs[0].vip, lb.specs[-1].vip
        assert bench.connect_once(last) == "8080"
        for port in ("8081", "8080"):
            phases = lb.end_to_end()
            assert set(bench.PHASES) <= set(phases) and all(phases[p] > 0 for p in bench.PHASES)
            assert 1 <= phases["changes"] <= 3
            assert bench.connect_once(last) == port
            assert bench.connect_once(first) == "8080"
        fe = lb.last
        assert len(lb.state.services[fe].maglev) == 251
        assert lb.in_process(count=2) > 0
        assert bench.connect_once(last) == "8080"
    finally:
        lb.close()
    assert not Path(f"/run/netns/{bench.NODE_NS}").exists()


def test_meshctl_direct_fill_matches_the_compiler(bench: ModuleType) -> None:
    """The state a skipped size is filled with equals what compile makes (names and local aside)."""
    specs = bench.kp.make_services(10, 2, (0, 9), ["10.244.2.2", "10.244.2.3"])
    settings = bench.LoadBalancerSettings(kube_proxy_replacement=True, algorithm="maglev",
                                          maglev_table_size=251)
    services, pods = bench.desired_state(specs, ["10.244.2.2", "10.244.2.3"])
    node = bench.LbNode(bench.NODE, bench.IPv4Address(bench.kp.BACKEND_GW), interface="")
    compiled = bench.compile_load_balancer(services, pods, [node], settings)[bench.NODE]
    direct = bench.DirectState(settings).state(specs)
    assert direct.services == compiled.services
    assert {i: (b.address, b.port) for i, b in direct.backends.items()} == \
        {i: (b.address, b.port) for i, b in compiled.backends.items()}


@pytest.fixture(autouse=True)
def _no_leftovers(kp: ModuleType) -> Iterator[None]:
    yield
    kp._delete_netns()
    kp._delete_netns(("mc-bench-lbc", "mc-bench-lbb", "mc-bench-lb"))
