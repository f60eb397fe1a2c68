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
import subprocess
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
from meshctl.lab import agents, registry
from meshctl.lab.netns import nsenter_argv
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
    # the node's agent stored it all: the drop names the FQDN and why, the refusal shows as such
    (drop,) = _observe(lab, "--to-fqdn", "evil.example.net", "--verdict", "DROPPED", "--protocol", "tcp")
    assert drop["dst_names"] == ["evil.example.net"] and drop["dst_ip"] == "203.0.113.66"
    assert drop["drop_reason"].startswith("default deny: payments/payment-processor egress isolated by ")
    refused = _observe(lab, "--protocol", "dns", "--verdict", "DROPPED", "--to-fqdn", "www.google.com")
    assert [(f["l7"]["type"], f["l7"]["dns"].get("rcode"), f["protocol"]) for f in refused] == [
        ("REQUEST", None, "UDP"), ("RESPONSE", "REFUSED", "UDP"), ("REQUEST", None, "TCP"),
        ("RESPONSE", "REFUSED", "TCP")]
    assert "no DNS rule of CiliumNetworkPolicy payments/payment-egress egress[1]" in refused[0]["drop_reason"]
    compact = meshctl(lab, "observe", "--to-fqdn", "api.stripe.com", "--last", "3")
    assert "dns-response FORWARDED (DNS Answer \"203.0.113.10\" TTL: 1 (api.stripe.com A))" in compact.stdout
    assert "-> api.stripe.com:443 (ID:" in compact.stdout, compact.stdout


def _observe(lab: Path, *flags: str, want: int = 1, timeout: float = 10.0) -> list[dict[str, object]]:
    """The flows `observe -o json` shows, once at least `want` are stored (the agent batches)."""
    deadline = time.monotonic() + timeout
    while True:
        done = meshctl(lab, "observe", "-o", "json", "--last", "100", *flags)
        assert done.returncode == 0, done.stderr
        flows = [json.loads(line) for line in done.stdout.splitlines()]
        if len(flows) >= want or time.monotonic() > deadline:
            return flows
        time.sleep(0.2)


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


def test_an_agent_restart_between_resolve_and_connect_keeps_the_connection_and_the_proxy(lab: Path) -> None:
    """The DNS proxy is a process of its own: an agent that stops leaves it running, the next one
    adopts it; the learned IPs stay in the ipcache all along."""
    files = DnsFiles.of(CLUSTER, "node-1")
    proxy = proxy_pid(files)
    assert [str(rr.rdata) for rr in _resolve("api.stripe.com").rr] == ["203.0.113.10"]
    agent = agents.running(CLUSTER)["node-1"]
    os.kill(agent, signal.SIGTERM)
    deadline = time.monotonic() + 10
    while agents.is_agent(agent, CLUSTER, "node-1"):
        assert time.monotonic() < deadline, "the agent did not stop"
        time.sleep(0.05)
    assert _connect("203.0.113.10") == b"external/api.stripe.com:443\n"
    assert proxy_pid(files) == proxy  # still answering while no agent runs
    assert [str(rr.rdata) for rr in _resolve("s3.amazonaws.com").rr] == ["203.0.113.20"]
    up = meshctl(lab, "lab", "up", timeout=180)
    assert up.returncode == 0, up.stdout + up.stderr
    assert agents.running(CLUSTER)["node-1"] != agent
    assert _connect("203.0.113.20") == b"external/s3.amazonaws.com:443\n"
    assert proxy_pid(files) == proxy  # adopted, never restarted
    # the new agent read the queries its predecessor missed: the flow carries the name
    (flow,) = _observe(lab, "--to-fqdn", "s3.amazonaws.com", "--protocol", "tcp", "--last", "1")
    assert flow["dst_names"] == ["s3.amazonaws.com"] and flow["verdict"] == "FORWARDED"


def test_a_new_proxy_takes_the_socket_over_before_the_old_one_leaves(lab: Path) -> None:
    """A second proxy binds the same sockets (SO_REUSEPORT) while the first runs; told to stop,
    the first answers what the kernel queued for it and leaves: no query is lost while a proxy is
    replaced."""
    files = DnsFiles.of(CLUSTER, "node-1")
    old = proxy_pid(files)
    assert old is not None
    argv = [a.decode() for a in Path(f"/proc/{old}/cmdline").read_bytes().split(b"\0") if a]
    netns = registry.require(CLUSTER).nodes["node-1"].netns
    new = subprocess.Popen(nsenter_argv(netns, argv), stdin=subprocess.DEVNULL, stdout=subprocess.DEVNULL,
                           stderr=subprocess.DEVNULL, start_new_session=True)
    try:
        deadline = time.monotonic() + 15
        while proxy_pid(files) != new.pid:  # it writes its pid once its sockets are bound
            assert new.poll() is None, "the new proxy could not bind next to the old one"
            assert time.monotonic() < deadline
            time.sleep(0.05)
        os.kill(old, signal.SIGTERM)  # it answers what it holds, then leaves the sockets to the new one
        answers = [_resolve("api.stripe.com") for _ in range(50)]  # at once and while it leaves
        assert all(a.header.rcode == RCODE.NOERROR and a.rr for a in answers)
        deadline = time.monotonic() + 5
        while Path(f"/proc/{old}").exists():
            assert time.monotonic() < deadline, "the old proxy did not leave"
            time.sleep(0.05)
        assert [str(rr.rdata) for rr in _resolve("s3.amazonaws.com").rr] == ["203.0.113.20"]
        assert _connect("203.0.113.10") == b"external/api.stripe.com:443\n"
    finally:
        new.terminate()
        new.wait(10)
    deadline = time.monotonic() + 15
    while proxy_pid(files) in (None, new.pid):  # the agent starts its own again: the next tests use it
        assert time.monotonic() < deadline, "the agent did not start a DNS proxy again"
        time.sleep(0.05)


def test_fqdn_cache_lists_the_learned_ips_and_clean_makes_new_connections_wait_for_an_answer(
        lab: Path) -> None:
    _resolve("api.stripe.com")
    _resolve("s3.amazonaws.com")
    listed = meshctl(lab, "fqdn", "cache", "list", "-o", "json")
    assert listed.returncode == 0, listed.stderr
    rows = {r["ip"]: r for r in json.loads(listed.stdout)}
    assert rows["203.0.113.10"]["names"] == ["api.stripe.com"] and rows["203.0.113.10"]["node"] == "node-1"
    assert rows["203.0.113.20"]["names"] == ["s3.amazonaws.com"] and "203.0.113.66" not in rows
    status = meshctl(lab, "status", "-o", "json")
    learned = {n["name"]: n["learned_ips"] for n in json.loads(status.stdout)["nodes"]}
    assert learned == {"node-1": len(rows), "node-2": 0}, status.stdout
    table = meshctl(lab, "fqdn", "cache", "list", "--matchpattern", "*.amazonaws.com")
    assert "203.0.113.20" in table.stdout and "203.0.113.10" not in table.stdout, table.stdout
    clean = meshctl(lab, "fqdn", "cache", "clean", "-p", "*.amazonaws.com", "--force")
    assert clean.returncode == 0, clean.stderr
    assert "node-1: 1 IP(s) removed: 203.0.113.20" in clean.stdout
    assert "node-2: 0 IP(s) removed" in clean.stdout
    with IpcacheMap.from_dir(node_pin_dir(CLUSTER, "node-1")) as ipcache:
        left = ipcache.read()
    assert IPv4Network("203.0.113.20/32") not in left and IPv4Network("203.0.113.10/32") in left
    assert _connect("203.0.113.20", timeout=1.0) is None  # a new connection needs a new answer
    _resolve("s3.amazonaws.com")
    assert _connect("203.0.113.20") == b"external/s3.amazonaws.com:443\n"
    bad = meshctl(lab, "fqdn", "cache", "list", "-p", "api.**.com")
    assert bad.returncode == 1 and bad.stderr.count("\n") == 1 and "--matchpattern" in bad.stderr, bad.stderr


def test_dns_settings_of_meshctl_toml_are_planned_and_reach_the_proxy_without_a_restart(lab: Path) -> None:
    files = DnsFiles.of(CLUSTER, "node-1")
    proxy = proxy_pid(files)
    toml = lab / "meshctl.toml"
    toml.write_text(toml.read_text() + '\n[dns]\nminTTL = 30\nrejectResponseCode = "nameError"\n')
    plan = meshctl(lab, "plan", timeout=120)
    moved = "meshctl.toml [dns] minTTL 0 -> 30, rejectResponseCode refused -> nameError"
    assert moved in plan.stdout, plan.stdout
    done = meshctl(lab, "apply", "--auto-approve", timeout=180)
    assert done.returncode == 0, done.stdout + done.stderr
    assert _resolve("www.google.com").header.rcode == RCODE.NXDOMAIN  # no longer REFUSED
    _resolve("api.stripe.com")  # TTL 1, held for the minimum 30 s (a longer expiry is saved within 1 s)
    deadline = time.monotonic() + 3
    while json.loads(files.learned.read_text())["ips"]["203.0.113.10"]["expires"] < time.time() + 25:
        assert time.monotonic() < deadline, "the minimum TTL did not hold"
        time.sleep(0.1)
    assert proxy_pid(files) == proxy


def test_a_learned_ip_inside_a_to_cidr_prefix_keeps_the_cidr_rules_allow(lab: Path) -> None:
    """The toFQDNs rule now allows api.stripe.com on 8443 only, a toCIDR rule 203.0.113.0/24 on
    443: the learned IP takes the identity of both, so 443 stays open after the answer (an IP
    with the selector's identity alone would lose the CIDR rule: the ipcache's longest prefix)."""
    policy = lab / "policies" / "payment-egress.yaml"
    text = policy.read_text().replace('- port: "443"', '- port: "8443"', 1)
    policy.write_text(text + '    - toCIDR: ["203.0.113.0/24"]\n      toPorts:\n        - ports:\n'
                             '            - port: "443"\n              protocol: TCP\n')
    done = meshctl(lab, "apply", "--auto-approve", timeout=180)
    assert done.returncode == 0, done.stdout + done.stderr
    clean = meshctl(lab, "fqdn", "cache", "clean", "--force")  # start from the CIDR identity alone
    assert clean.returncode == 0, clean.stderr
    assert _connect("203.0.113.10") == b"external/api.stripe.com:443\n"
    assert [str(rr.rdata) for rr in _resolve("api.stripe.com").rr] == ["203.0.113.10"]
    learned = json.loads(DnsFiles.of(CLUSTER, "node-1").learned.read_text())["ips"]["203.0.113.10"]
    with IpcacheMap.from_dir(node_pin_dir(CLUSTER, "node-1")) as ipcache:
        entries = ipcache.read()
    assert entries[IPv4Network("203.0.113.10/32")].identity == learned["identity"]
    assert learned["identity"] != entries[IPv4Network("203.0.113.0/24")].identity
    assert _connect("203.0.113.10") == b"external/api.stripe.com:443\n"
