"""The lab's network without policy: real netns, veths, underlay, servers and connections."""

from __future__ import annotations

import os
import subprocess
import sys
from collections.abc import Iterator
from ipaddress import IPv4Address

import pytest
from lab_helpers import lab, two_node_topology, unique

from meshctl.errors import LabError
from meshctl.lab import cluster, datapath, names, probe, registry, servers
from meshctl.lab.netns import list_netns
from meshctl.lab.topology import LabPod

pytestmark = pytest.mark.privileged

NET = unique("t-lab-net")


@pytest.fixture(scope="module")
def net() -> Iterator[cluster.UpResult]:
    with lab(two_node_topology(NET)) as res:
        yield res


def _ip(res: cluster.UpResult, pod: str) -> IPv4Address:
    return res.registry.pods[pod].address


def test_addresses_come_from_node_pod_cidrs(net: cluster.UpResult) -> None:
    assert _ip(net, "demo/frontend") == IPv4Address("10.210.1.2")  # .1 is the node's gateway
    assert _ip(net, "demo/api") == IPv4Address("10.210.1.3")
    assert _ip(net, "demo/database") == IPv4Address("10.210.2.2")
    assert registry.pod_ips(NET) == {k: p.address for k, p in net.registry.pods.items()}
    assert set(registry.lab_nodes(NET)) == {"n1", "n2"}
    assert all(len(p.veth) <= 15 and p.veth.startswith("lxc") for p in net.registry.pods.values())


def test_tcp_same_node(net: cluster.UpResult) -> None:
    res = probe.connect(NET, "demo/frontend", _ip(net, "demo/api"), 3000)
    assert res.ok, res.error
    assert res.reply == "demo/api:3000"


def test_tcp_cross_node_both_ways(net: cluster.UpResult) -> None:
    there = probe.connect(NET, "demo/frontend", _ip(net, "demo/database"), 5432)
    back = probe.connect(NET, "demo/database", _ip(net, "demo/frontend"), 80)
    assert (there.reply, back.reply) == ("demo/database:5432", "demo/frontend:80")


def test_udp_echo_cross_node(net: cluster.UpResult) -> None:
    res = probe.connect(NET, "demo/database", _ip(net, "demo/api"), 53, "UDP")
    assert res.ok, res.error
    assert res.reply.startswith("demo/api:53 ")  # the echo of the probe's DNS query


def test_undeclared_port_is_refused(net: cluster.UpResult) -> None:
    res = probe.connect(NET, "demo/frontend", _ip(net, "demo/database"), 5433)
    assert not res.ok
    assert "refused" in res.error.lower()


def test_unsolicited_udp_arrives_without_datapath(net: cluster.UpResult) -> None:
    res = probe.udp_unsolicited(NET, "demo/database", "demo/frontend", 40000)
    assert res.ok, res.error
    assert res.reply.startswith(f"{_ip(net, 'demo/database')}:")


def test_pod_routes_via_node_gateway(net: cluster.UpResult) -> None:
    pod = net.registry.pods["demo/frontend"]
    out = subprocess.run(["nsenter", f"--net=/run/netns/{pod.netns}", "ip", "route", "show", "default"],
                         capture_output=True, text=True, check=True).stdout
    assert "via 10.210.1.1 dev eth0" in out


def test_up_twice_is_idempotent(net: cluster.UpResult) -> None:
    before = registry.require(NET)
    again = cluster.up(two_node_topology(NET), with_datapath=False)
    assert again.created_pods == []
    assert {k: (p.ip, p.server_pid) for k, p in again.registry.pods.items()} == {
        k: (p.ip, p.server_pid) for k, p in before.pods.items()}
    assert probe.connect(NET, "demo/api", _ip(net, "demo/database"), 5432).ok


def test_status_lists_nodes_and_pods(net: cluster.UpResult) -> None:
    _reg, nodes = cluster.status(NET)
    assert [n.record.name for n in nodes] == ["n1", "n2"]
    assert all(n.netns_ok for n in nodes)
    pods = {p.record.key: p for n in nodes for p in n.pods}
    assert set(pods) == {"demo/frontend", "demo/api", "demo/database"}
    assert all(p.netns_ok and p.server_ok for p in pods.values())
    out = _meshctl("lab", "status", "--cluster", NET)
    assert out.returncode == 0, out.stderr
    assert "10.210.2.2" in out.stdout and "demo/database" in out.stdout


def _meshctl(*args: str) -> subprocess.CompletedProcess[str]:
    exe = os.path.join(os.path.dirname(sys.executable), "meshctl")
    return subprocess.run([exe, *args], capture_output=True, text=True, timeout=60)


def test_exec_runs_in_pod_with_pins_visible(net: cluster.UpResult) -> None:
    pins = names.pin_dir(NET)
    pins.mkdir(parents=True, exist_ok=True)
    out = _meshctl("lab", "exec", "--cluster", NET, "demo/api", "--", "sh", "-c",
                   f"ip -br addr show dev eth0; test -d {pins} && echo pins-visible")
    assert out.returncode == 0, out.stderr
    assert "10.210.1.3/32" in out.stdout
    assert "pins-visible" in out.stdout


def test_exec_unknown_pod_is_one_line_error(net: cluster.UpResult) -> None:
    out = _meshctl("lab", "exec", "--cluster", NET, "demo/nope", "--", "true")
    assert out.returncode == 1
    assert "no pod 'demo/nope'" in out.stderr and "Traceback" not in out.stderr


def _lab_netns(cluster_name: str) -> list[str]:
    return [n for n in list_netns() if names.is_lab_netns(cluster_name, n, {"n1", "n2"})]


@pytest.mark.parametrize("with_datapath", [False, True])
def test_down_removes_everything(with_datapath: bool) -> None:
    if with_datapath and not datapath.available():
        pytest.skip("meshctl.dataplane.node not available")
    name = unique("t-lab-down")
    topo = two_node_topology(name)
    res = cluster.up(topo, with_datapath=with_datapath)
    try:
        pids = [p.server_pid for p in res.registry.pods.values()]
        assert len(_lab_netns(name)) == 6
        if with_datapath:
            assert res.datapath and (names.pin_dir(name) / "n1" / "links").is_dir()
        names.pin_dir(name).mkdir(parents=True, exist_ok=True)
    finally:
        out = cluster.down(name)
    assert _lab_netns(name) == []
    assert not names.pin_dir(name).exists()
    assert not registry.registry_path(name).exists()
    assert not registry.log_dir(name).exists()
    assert sorted(out.pids) == sorted(p for p in pids if p)
    assert all(not servers.is_lab_server(p, name) for p in pids if p)
    assert all(not os.path.exists(f"/proc/{p}") or _zombie(p) for p in pids if p)
    with pytest.raises(LabError):
        registry.require(name)


def _zombie(pid: int) -> bool:
    try:
        with open(f"/proc/{pid}/stat") as f:
            return f.read().split(") ", 1)[1].startswith("Z")
    except OSError:
        return True


def test_down_after_half_built_crash(monkeypatch: pytest.MonkeyPatch) -> None:
    name = unique("t-lab-crash")
    neighbour = f"{name}-x"  # a different lab whose names share our prefix: must survive
    topo = two_node_topology(name)
    calls = {"n": 0}
    real_start = servers.start

    def crash_on_second(cluster_name: str, pod: registry.PodRecord, timeout: float = 5.0) -> int:
        calls["n"] += 1
        if calls["n"] == 2:
            raise RuntimeError("simulated crash")
        return real_start(cluster_name, pod, timeout)

    other = f"mc-{neighbour}-u"
    subprocess.run(["ip", "netns", "add", other], check=True)
    try:
        monkeypatch.setattr(servers, "start", crash_on_second)
        with pytest.raises(RuntimeError):
            cluster.up(topo, with_datapath=False)
        monkeypatch.undo()
        # One server runs, netns exist, the registry names them; also a stray netns of ours
        # that no registry names, and a server the registry lost.
        stray = names.pod_netns(name, "demo/lost")
        subprocess.run(["ip", "netns", "add", stray], check=True)
        lost = registry.PodRecord(key="demo/lost", node="n1", netns=stray, ip="10.210.1.9", veth="lxcx",
                                  tcp_ports=[8080])
        lost_pid = servers.start(name, lost)
        assert len(_lab_netns(name)) >= 6
        out = cluster.down(name)
        assert _lab_netns(name) == []
        assert lost_pid in out.pids
        assert not servers.is_lab_server(lost_pid, name)
        assert servers.find_all(name) == []
        assert other in list_netns()
    finally:
        cluster.down(name)
        subprocess.run(["ip", "netns", "delete", other], check=False)


def test_reup_removes_pods_no_longer_declared() -> None:
    name = unique("t-lab-shrink")
    topo = two_node_topology(name)
    with lab(topo) as first:
        gone = first.registry.pods["demo/database"]
        smaller = two_node_topology(name, pods=(
            LabPod("demo/frontend", "n1", (80,)),
            LabPod("demo/api", "n1", (3000, 3001)),
        ))
        second = cluster.up(smaller, with_datapath=False)
        assert set(second.registry.pods) == {"demo/frontend", "demo/api"}
        assert gone.netns not in list_netns()
        assert not servers.is_lab_server(gone.server_pid or 0, name)
        # api's ports changed: its server was restarted with the new port set
        api = second.registry.pods["demo/api"]
        assert probe.connect(name, "demo/frontend", api.ip, 3001).reply == "demo/api:3001"
        assert second.registry.pods["demo/frontend"].ip == first.registry.pods["demo/frontend"].ip
