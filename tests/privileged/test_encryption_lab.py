"""Transparent encryption end to end with the real CLI on examples/three-tier (issue 7):
plain then encrypted then plain again, seen on the underlay; strict mode; drift; rotation;
no lost connection during enable and disable; no private key anywhere."""

from __future__ import annotations

import os
import re
import subprocess
from collections.abc import Iterator
from pathlib import Path

import pytest
from apply_helpers import MESHCTL, lab_of, meshctl, three_tier_copy
from lab_helpers import unique
from wg_helpers import connection_loop, private_keys, underlay_capture

from meshctl.dataplane.wireguard import names
from meshctl.lab import registry
from meshctl.lab.probe import udp_exchange_in

pytestmark = [pytest.mark.privileged, pytest.mark.lab]

NODES = ["node-1", "node-2", "node-3"]
OUTPUTS: list[str] = []  # every stdout/stderr of the CLI in this module, searched for keys
KEYS: dict[str, str] = {}  # every private key seen, collected from the nodes' key files


def run(repo: Path, *args: str) -> subprocess.CompletedProcess[str]:
    res = meshctl(repo, *args, timeout=120)
    OUTPUTS.extend([res.stdout, res.stderr])
    for node, key in private_keys(registry_cluster(repo), NODES).items():
        KEYS[f"{node}:{key[:6]}"] = key
    return res


def registry_cluster(repo: Path) -> str:
    m = re.search(r'(?m)^name = "([^"]+)"', (repo / "meshctl.toml").read_text())
    assert m
    return m.group(1)


def set_encryption(repo: Path, enabled: bool) -> None:
    toml = repo / "meshctl.toml"
    text = re.sub(r"(?ms)\n\[encryption\].*", "", toml.read_text())
    toml.write_text(text + f"\n[encryption]\nenabled = {str(enabled).lower()}\nstrictMode = true\n")


@pytest.fixture(scope="module")
def repo(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Path]:
    cluster = unique("t-wg-e2e")
    root = three_tier_copy(tmp_path_factory.mktemp("wg") / "repo", cluster)
    set_encryption(root, False)
    with lab_of(root):
        res = run(root, "apply", "--auto-approve")
        assert res.returncode == 0, res.stderr
        yield root
    for node in NODES:  # lab down stopped every wireguard-go of the cluster
        assert not names.uapi_socket(names.interface(cluster, node)).exists()


def marker_exchange(repo: Path, marker: bytes) -> bool:
    """demo/api (node-2) -> kube-system/kube-dns (node-1) UDP 53, echoed back: crosses nodes."""
    cluster = registry_cluster(repo)
    src, dst = registry.pod(cluster, "demo/api"), registry.pod(cluster, "kube-system/kube-dns")
    return udp_exchange_in(src.netns, dst.ip, 53, marker, timeout=1.0).ok


def loop_target(repo: Path) -> tuple[str, str]:
    cluster = registry_cluster(repo)
    return registry.pod(cluster, "demo/frontend").netns, registry.pod(cluster, "demo/api").ip


def test_plain_marker_is_visible_on_the_underlay(repo: Path, tmp_path: Path) -> None:
    with underlay_capture(registry_cluster(repo), tmp_path) as cap:
        assert marker_exchange(repo, b"MARKER-PLAIN-e2e-01")
    assert cap.payload_has(b"MARKER-PLAIN-e2e-01")


def test_enable_is_a_safe_rollout(repo: Path) -> None:
    set_encryption(repo, True)
    res = run(repo, "plan")
    assert res.returncode == 0, res.stderr
    assert "+ node-1 wireguard interface" in res.stdout
    assert "create the node's key" in res.stdout and "(known after apply)" in res.stdout
    netns, ip = loop_target(repo)
    with connection_loop(netns, ip, 3000) as loop:
        res = run(repo, "encryption", "rollout")
    assert res.returncode == 0, res.stderr
    assert "Encryption rollout complete after 3 step(s)." in res.stdout, res.stdout
    assert res.stdout.count("change(s) applied and verified (plan") == 3, res.stdout  # every node probed
    print(f"enable: {loop.ok} connections, {len(loop.failed)} lost")
    assert loop.ok >= 10 and loop.failed == []
    res = run(repo, "plan", "--detailed-exitcode")
    assert res.returncode == 0 and "No changes." in res.stdout
    status = run(repo, "encryption", "status").stdout
    assert status.count("2 peer(s), 2 routed") == 3, status


def test_encrypted_underlay_carries_only_wireguard(repo: Path, tmp_path: Path) -> None:
    with underlay_capture(registry_cluster(repo), tmp_path) as cap:
        assert marker_exchange(repo, b"MARKER-SECRET-e2e-02")
    assert not cap.payload_has(b"MARKER-SECRET-e2e-02")
    lines = cap.ip_lines()
    assert lines and all(f".{names.DEFAULT_PORT} > " in ln or f".{names.DEFAULT_PORT}: " in ln
                         for ln in lines), lines
    assert all("UDP" in ln for ln in lines), lines


def test_strict_mode_drops_a_plain_packet_and_drift_shows_it(repo: Path) -> None:
    cluster = registry_cluster(repo)
    node2 = registry.load(cluster).nodes["node-2"]  # type: ignore[union-attr]
    node1_cidr = registry.load(cluster).nodes["node-1"].pod_cidr  # type: ignore[union-attr]
    # On purpose: node-2's route into the tunnel goes, so api's packet to node-1 leaves plain.
    subprocess.run(["ip", "-n", node2.netns, "route", "del", node1_cidr, "table", str(names.TABLE)],
                   check=True)
    assert not marker_exchange(repo, b"MARKER-STRICT-e2e-03")
    res = run(repo, "drift", "--detailed-exitcode")
    assert res.returncode == 2, res.stdout + res.stderr
    assert "~ node-2 wireguard peer node-1" in res.stdout, res.stdout
    res = subprocess.run(["sh", "-c", f"yes | {MESHCTL} drift --heal"], cwd=repo,
                         capture_output=True, text=True, timeout=60)
    OUTPUTS.extend([res.stdout, res.stderr])
    assert res.returncode == 0, res.stderr
    assert marker_exchange(repo, b"MARKER-HEALED-e2e-04")


def test_peer_removed_by_hand_shows_in_drift(repo: Path) -> None:
    ifname = names.interface(registry_cluster(repo), "node-3")
    peer = subprocess.run(["wg", "show", ifname, "peers"], capture_output=True, text=True,
                          check=True).stdout.split()[0]
    subprocess.run(["wg", "set", ifname, "peer", peer, "remove"], check=True)
    res = run(repo, "drift")
    assert "+ node-3 wireguard peer" in res.stdout and "missing on the node" in res.stdout, res.stdout
    res = run(repo, "plan", "--detailed-exitcode")
    assert res.returncode == 2 and "node-3 wireguard peer" in res.stdout
    assert run(repo, "encryption", "rollout").returncode == 0  # every step, up to the desired state
    assert run(repo, "drift", "--detailed-exitcode").returncode == 0


def test_rotation_changes_the_key_without_losing_a_connection(repo: Path) -> None:
    cluster = registry_cluster(repo)
    before = (names.key_dir(cluster, "node-2") / "public.key").read_text().strip()
    assert run(repo, "encryption", "rotate", "--node", "node-2").returncode == 0
    netns, ip = loop_target(repo)
    with connection_loop(netns, ip, 3000) as loop:
        res = run(repo, "encryption", "rollout")
    assert res.returncode == 0, res.stderr
    after = (names.key_dir(cluster, "node-2") / "public.key").read_text().strip()
    assert after != before
    assert loop.ok >= 10 and loop.failed == []
    assert f"public key {after}" in run(repo, "encryption", "status").stdout


def test_disable_is_a_safe_rollout(repo: Path, tmp_path: Path) -> None:
    set_encryption(repo, False)
    netns, ip = loop_target(repo)
    with connection_loop(netns, ip, 3000) as loop:
        res = run(repo, "encryption", "rollout")
    assert res.returncode == 0, res.stderr
    assert "Encryption rollout complete after 2 step(s)." in res.stdout, res.stdout
    print(f"disable: {loop.ok} connections, {len(loop.failed)} lost")
    assert loop.ok >= 10 and loop.failed == []
    assert run(repo, "encryption", "status").stdout.count("no WireGuard device") == 3
    with underlay_capture(registry_cluster(repo), tmp_path) as cap:
        assert marker_exchange(repo, b"MARKER-PLAIN-e2e-05")
    assert cap.payload_has(b"MARKER-PLAIN-e2e-05")


def test_no_private_key_in_plans_state_logs_or_output(repo: Path) -> None:
    assert len(KEYS) >= 4, "keys of three nodes plus a rotated one were seen"
    places = [repo / "plans", repo / "state", registry.log_dir(registry_cluster(repo))]
    for d in {names.key_dir(registry_cluster(repo), n) for n in NODES}:
        places += [d / "wireguard-go.log", d / "public.key"]
    texts = list(OUTPUTS)
    for place in places:
        files = [place] if place.is_file() else [p for p in place.rglob("*") if p.is_file()] \
            if place.exists() else []
        texts += [f.read_text(errors="replace") for f in files]
    assert len(texts) > 20
    for name, key in KEYS.items():
        base = key.rstrip("=")
        leaks = [i for i, t in enumerate(texts) if base in t]
        assert not leaks, f"private key of {name} found in {len(leaks)} place(s)"
    assert all(os.stat(names.key_dir(registry_cluster(repo), n) / "private.key").st_mode & 0o077 == 0
               for n in NODES)
