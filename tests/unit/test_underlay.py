"""Node underlay addresses for encryption and the load balancer without a lab: meshctl.toml
first, what the lab's backend fills in second, one clear error when a node has neither
(meshctl.underlay)."""

from __future__ import annotations

import re
import shutil
from dataclasses import asdict, replace
from ipaddress import IPv4Address, IPv4Network
from pathlib import Path

import pytest

from meshctl.app.encryption import with_encryption
from meshctl.dataplane.wireguard.names import interface
from meshctl.lab import registry
from meshctl.loadbalancer.hook import with_load_balancer
from meshctl.model.config import MeshConfig
from meshctl.nodestate import FrozenMap, NodeState, WireguardPeer, WireguardState
from meshctl.source import load_desired, parse_config
from meshctl.underlay import MissingAddressError, underlay_addresses

EXAMPLES = Path(__file__).resolve().parents[2] / "examples"
CLUSTER = "t-ad-unit"
NODES = """[cluster]
name = "t-ad-unit"

[[nodes]]
name = "n1"
podCIDR = "10.1.1.0/24"
address = "192.0.2.11"

[[nodes]]
name = "n2"
podCIDR = "10.1.2.0/24"
{n2_address}
"""
ENCRYPTION = "\n[encryption]\nenabled = {enabled}\nnodeEncryption = true\n"


@pytest.fixture(autouse=True)
def lab_dir(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    """An empty MESHCTL_LAB_DIR: no lab is visible unless a test writes a registry there."""
    path = tmp_path / "lab"
    path.mkdir()
    monkeypatch.setenv("MESHCTL_LAB_DIR", str(path))
    return path


def config(n2_address: str | None = "192.0.2.12", enabled: bool = True) -> MeshConfig:
    text = NODES.format(n2_address=f'address = "{n2_address}"' if n2_address else "")
    return parse_config(text + ENCRYPTION.format(enabled=str(enabled).lower()), Path("/tmp"))


def save_lab(nodes: dict[str, str]) -> None:
    """A lab registry of CLUSTER whose nodes have these underlay addresses (no netns behind it)."""
    reg = registry.Registry(CLUSTER, "mc-ad-underlay", "172.31.250.0/24", nodes={
        name: registry.NodeRecord(name, f"mc-ad-{name}", "10.1.0.0/24", ip, f"p-{name}")
        for name, ip in nodes.items()
    })
    registry.save(reg)
    assert asdict(registry.load(CLUSTER) or reg) == asdict(reg)


def keyed(node: str, key: str) -> NodeState:
    """A node whose WireGuard device is up with `key` and no peers yet."""
    return NodeState(node, encryption=WireguardState(interface=interface(CLUSTER, node), public_key=key,
                                                     listen_port=51871, fwmark=0xE57))


def test_addresses_from_the_config_need_no_lab() -> None:
    assert underlay_addresses(config()) == {"n1": IPv4Address("192.0.2.11"), "n2": IPv4Address("192.0.2.12")}
    assert underlay_addresses(config(None)) == {"n1": IPv4Address("192.0.2.11")}


def test_the_lab_fills_only_what_the_config_lacks(tmp_path: Path) -> None:
    from meshctl.backend.lab import open_lab

    save_lab({"n1": "172.31.250.1", "n2": "172.31.250.2"})
    repo = tmp_path / "repo"
    repo.mkdir()
    (repo / "meshctl.toml").write_text(NODES.format(n2_address=""))
    assert underlay_addresses(load_desired(repo).config) == {"n1": IPv4Address("192.0.2.11")}
    desired, lab = open_lab(load_desired(repo))
    want = {"n1": IPv4Address("192.0.2.11"), "n2": IPv4Address("172.31.250.2")}
    assert underlay_addresses(desired.config) == want
    assert lab.underlay_names == {"172.31.250.1": "n1", "172.31.250.2": "n2"}  # names of WireGuard peers


def test_encryption_peers_use_the_config_addresses() -> None:
    observed = {"n1": keyed("n1", "K1="), "n2": keyed("n2", "K2=")}
    out = with_encryption(config(), {n: NodeState(n) for n in observed}, observed, rotate=frozenset())
    (peer_of_n1,) = out["n1"].encryption.peers.values()
    (peer_of_n2,) = out["n2"].encryption.peers.values()
    assert peer_of_n1.endpoint == "192.0.2.12:51871" and peer_of_n2.endpoint == "192.0.2.11:51871"
    # nodeEncryption: the peer's underlay /32 goes through the tunnel too
    assert IPv4Network("192.0.2.12/32") in peer_of_n1.allowed_ips
    assert out["n1"].encryption.interface == interface(CLUSTER, "n1")


def test_enabled_encryption_without_an_address_is_one_clear_error() -> None:
    observed = {"n1": NodeState("n1"), "n2": NodeState("n2")}
    with pytest.raises(MissingAddressError) as err:
        with_encryption(config(None), dict(observed), observed, rotate=frozenset())
    text = str(err.value)
    assert text.startswith("meshctl.toml: nodes: encryption"), text
    assert "n2 has none (no lab of 't-ad-unit' knows it)" in text
    assert 'set address = "<the node\'s InternalIP>" under [[nodes]] name = "n2"' in text
    assert "\n" not in text and err.value.nodes == ["n2"]


def test_disabling_needs_no_address() -> None:
    """The disable steps unroute and remove what is live: the endpoints are not needed."""
    peer = WireguardPeer("192.0.2.11:51871", (IPv4Network("10.1.1.0/24"),), routed=True)
    wg = replace(keyed("n2", "K2=").encryption, peers=FrozenMap({"K1=": peer}), sources=("from 10.1.2.0/24",))
    n2 = NodeState("n2", encryption=wg)
    observed = {"n1": keyed("n1", "K1="), "n2": n2}
    out = with_encryption(config(None, enabled=False), {n: NodeState(n) for n in observed}, observed,
                          rotate=frozenset())
    step = out["n2"].encryption
    assert step.interface and step.sources == () and not any(p.routed for p in step.peers.values())


def _services_repo(tmp_path: Path, addresses: dict[str, str]) -> Path:
    """examples/services with the given [[nodes]] addresses and pod IPs written in."""
    repo = tmp_path / "services"
    shutil.copytree(EXAMPLES / "services", repo, ignore=shutil.ignore_patterns("state", "plans"))
    toml = repo / "meshctl.toml"
    text = toml.read_text().replace('name = "services"', f'name = "{CLUSTER}"')
    for node, addr in addresses.items():
        text = re.sub(rf'(name = "{node}"\n)', rf'\1address = "{addr}"\n', text)
    toml.write_text(text)
    return repo


def _with_pod_ips(repo: Path) -> object:
    desired = load_desired(repo)
    nets = {n.name: n.pod_cidr for n in desired.config.nodes}
    ips = {p.key: nets[p.node_name].network_address + 10 + i for i, p in enumerate(desired.pods)}
    return desired.with_pod_ips(ips)


def test_load_balancer_uses_the_config_addresses(tmp_path: Path) -> None:
    addresses = {"node-1": "192.0.2.21", "node-2": "192.0.2.22", "node-3": "192.0.2.23"}
    desired = _with_pod_ips(_services_repo(tmp_path, addresses))
    out = with_load_balancer(desired, {n: NodeState(n) for n in addresses}, {})
    for node, addr in addresses.items():
        lb = out[node].load_balancer
        assert lb.enabled and lb.snat_address == IPv4Address(addr) and lb.interface == "eth0"
        nodeports = {fe for fe in lb.services if fe.port == 30080}
        assert {fe.address for fe in nodeports} == {IPv4Address(addr)}, nodeports


def test_load_balancer_without_addresses_is_one_clear_error(tmp_path: Path) -> None:
    desired = _with_pod_ips(_services_repo(tmp_path, {"node-1": "192.0.2.21"}))
    with pytest.raises(MissingAddressError) as err:
        with_load_balancer(desired, {n: NodeState(n) for n in ("node-1", "node-2", "node-3")}, {})
    text = str(err.value)
    assert "kubeProxyReplacement" in text and "node-2, node-3 have none" in text
    assert 'under [[nodes]] name = "node-2"' in text


def test_load_balancer_off_needs_no_address(tmp_path: Path) -> None:
    repo = _services_repo(tmp_path, {})
    toml = repo / "meshctl.toml"
    toml.write_text(toml.read_text().replace("kubeProxyReplacement = true", "kubeProxyReplacement = false"))
    desired = _with_pod_ips(repo)
    intended = {n: NodeState(n) for n in ("node-1", "node-2", "node-3")}
    assert with_load_balancer(desired, intended, {}) == intended
