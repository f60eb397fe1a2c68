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


@pytest.fixture(autouse=True)
def _no_leftovers(kp: ModuleType) -> Iterator[None]:
    yield
    kp._delete_netns()
