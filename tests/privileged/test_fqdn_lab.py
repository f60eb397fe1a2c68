"""FQDN egress end to end on examples/fqdn-egress: the DNS proxy, toFQDNs, no first-packet drop.

`meshctl apply` of the seed's payment-egress policy (with its DNS rule) on a two-node lab whose
kube-dns answers for real and whose external hosts live outside the cluster. The payment
processor resolves through the node's DNS proxy (the datapath hands it port 53), which learns the
IPs of allowed answers into the ipcache before the pod sees them.
"""

from __future__ import annotations

import json
import os
import signal
import socket
import time
from collections.abc import Iterator
from ipaddress import IPv4Network
from pathlib import Path

import pytest
from apply_helpers import cli_lab, example_copy, meshctl, unique_cluster
from dnslib import RCODE, DNSRecord

from meshctl.dataplane.dnsproxy import DnsFiles, proxy_pid
from meshctl.dataplane.maps import IpcacheMap
from meshctl.dataplane.netns import in_netns
from meshctl.dataplane.node import node_pin_dir
from meshctl.lab import registry
from meshctl.nodestate import IpcacheEntry

pytestmark = [pytest.mark.privileged, pytest.mark.lab]

CLUSTER = unique_cluster("t-fqdn")
CLIENT = "payments/payment-processor"


@pytest.fixture(scope="module")
def lab(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Path]:
    root = example_copy("fqdn-egress", tmp_path_factory.mktemp("fqdn") / "repo", CLUSTER)
    with cli_lab(root):
        done = meshctl(root, "apply", "--auto-approve", timeout=180)
        assert done.returncode == 0, done.stdout + done.stderr
        yield root


def _resolve(name: str, tcp: bool = False) -> DNSRecord:
    reg = registry.require(CLUSTER)
    with in_netns(reg.pods[CLIENT].netns):
        raw = DNSRecord.question(name).send(reg.pods["kube-system/kube-dns"].ip, 53, tcp=tcp, timeout=3)
    return DNSRecord.parse(raw)


def _connect(ip: str, timeout: float = 2.0) -> bytes | None:
    with in_netns(registry.require(CLUSTER).pods[CLIENT].netns):
        try:
            with socket.create_connection((ip, 443), timeout=timeout) as conn:
                return conn.recv(100)
        except OSError:
            return None


def _queries() -> list[dict[str, object]]:
    lines = DnsFiles.of(CLUSTER, "node-1").log.read_text().splitlines()
    return [json.loads(line) for line in lines]


def test_allowed_names_connect_others_are_dropped_or_refused(lab: Path) -> None:
    for name, ip in (("api.stripe.com", "203.0.113.10"), ("s3.amazonaws.com", "203.0.113.20")):
        answer = _resolve(name)
        assert [str(rr.rdata) for rr in answer.rr] == [ip]
        assert _connect(ip) == f"external/{name}:443\n".encode()
    # the DNS rule lets the name through, but no toFQDNs selects it: the connection is dropped
    assert [str(rr.rdata) for rr in _resolve("evil.example.net").rr] == ["203.0.113.66"]
    assert _connect("203.0.113.66", timeout=1.0) is None
    # outside the DNS rule: REFUSED by the proxy, over UDP and TCP, never forwarded
    for tcp in (False, True):
        refused = _resolve("www.google.com", tcp=tcp)
        assert refused.header.rcode == RCODE.REFUSED and not refused.rr
    asked = [q for q in _queries() if q["query"] == "www.google.com"]
    assert [(q["verdict"], q["rcode"], q["protocol"]) for q in asked] == [
        ("DENIED", "REFUSED", "udp"), ("DENIED", "REFUSED", "tcp")]
    stripe = next(q for q in _queries() if q["query"] == "api.stripe.com")
    assert stripe["verdict"] == "FORWARDED" and stripe["answers"] == ["203.0.113.10"] and stripe["ttl"] == 1


def test_learned_ips_are_runtime_state_not_drift_but_a_hand_made_entry_is(lab: Path) -> None:
    _resolve("api.stripe.com")
    plan = meshctl(lab, "plan", timeout=120)
    assert plan.returncode == 0, plan.stderr
    assert "No changes." in plan.stdout
    hand = IPv4Network("203.0.113.99/32")
    with IpcacheMap.from_dir(node_pin_dir(CLUSTER, "node-1")) as ipcache:
        stripe_identity = ipcache.read()[IPv4Network("203.0.113.10/32")].identity
        ipcache.upsert({hand: IpcacheEntry(stripe_identity)})
    drift = meshctl(lab, "plan", timeout=120)
    assert drift.returncode == 0, drift.stderr
    assert "- node-1 ipcache 203.0.113.99/32" in drift.stdout
    healed = meshctl(lab, "apply", "--auto-approve", timeout=180)
    assert healed.returncode == 0, healed.stdout + healed.stderr
    with IpcacheMap.from_dir(node_pin_dir(CLUSTER, "node-1")) as ipcache:
        left = ipcache.read()
    assert hand not in left and IPv4Network("203.0.113.10/32") in left  # the learned IP stays


def test_a_thousand_resolve_then_connect_cycles_drop_no_first_packet(lab: Path) -> None:
    """api.stripe.com has a 1-second TTL: every cycle asks again and connects at once. A first
    packet dropped before the proxy wrote the ipcache would cost the connect its 0.5 s."""
    reg = registry.require(CLUSTER)
    server = reg.pods["kube-system/kube-dns"].ip
    failures = []
    with in_netns(reg.pods[CLIENT].netns):
        for n in range(1000):
            answer = DNSRecord.parse(DNSRecord.question("api.stripe.com").send(server, 53, timeout=3))
            ip = str(answer.rr[0].rdata)
            try:
                with socket.create_connection((ip, 443), timeout=0.5):
                    pass
            except OSError as err:
                failures.append((n, str(err)))
    assert failures == []


def test_a_proxy_restart_between_resolve_and_connect_keeps_the_connection(lab: Path) -> None:
    files = DnsFiles.of(CLUSTER, "node-1")
    assert [str(rr.rdata) for rr in _resolve("s3.amazonaws.com").rr] == ["203.0.113.20"]
    old = proxy_pid(files)
    assert old is not None
    os.kill(old, signal.SIGKILL)
    assert _connect("203.0.113.20") == b"external/s3.amazonaws.com:443\n"
    deadline = time.monotonic() + 15
    while proxy_pid(files) in (None, old):  # the node's agent starts it again
        assert time.monotonic() < deadline, "the DNS proxy was not restarted"
        time.sleep(0.1)
    deadline = time.monotonic() + 5
    while True:  # the new proxy has read its rules (and the learned IPs) back
        try:
            answer = _resolve("api.stripe.com")
            break
        except OSError:
            assert time.monotonic() < deadline
            time.sleep(0.1)
    assert [str(rr.rdata) for rr in answer.rr] == ["203.0.113.10"]
    assert "203.0.113.20" in json.loads(files.learned.read_text())["ips"]
