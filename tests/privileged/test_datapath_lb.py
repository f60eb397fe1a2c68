"""The C load balancer (bpf/lib/lb.h) on synthetic frames through BPF_PROG_TEST_RUN.

Maps are filled with the encoders of meshctl.dataplane.lb_maps (the ones reconcile uses).
Layout: pod A 10.0.1.1 (endpoint 11, identity 1001) is the client; service 10.96.0.10:80/TCP;
backends 10.0.2.1..3:8080 (identities 2001..2003); this node's underlay address 172.31.0.1.
"""

from __future__ import annotations

import ctypes
import struct
from collections import Counter
from collections.abc import Iterator
from ipaddress import IPv4Address

import pytest
from datapath_harness import TC_ACT_OK, TC_ACT_SHOT, Datapath, Rule, build_object

from meshctl.dataplane import frames
from meshctl.dataplane import structs as S
from meshctl.dataplane.frames import IPPROTO_TCP, IPPROTO_UDP, TCP_ACK, TCP_SYN
from meshctl.dataplane.lb_maps import (
    encode_backend,
    encode_frontend,
    encode_node_config,
    encode_service,
    encode_slot,
    new_maglev_table,
    tuple_hash,
)
from meshctl.dataplane.libbpf import Map
from meshctl.nodestate import Direction, LbBackendEntry, LbFrontend, LbService, LoadBalancerState

pytestmark = pytest.mark.privileged

TC_ACT_REDIRECT = 7
A, A_EP, A_ID = "10.0.1.1", 11, 1001
VIP, VPORT = "10.96.0.10", 80
BACKENDS = {1: "10.0.2.1", 2: "10.0.2.2", 3: "10.0.2.3"}
BE_ID = {1: 2001, 2: 2002, 3: 2003}
BPORT = 8080
NODE_IP, CLIENT = "172.31.0.1", "172.31.9.9"
LB_MAPS = ("lb_services", "lb_backends", "lb_slots", "lb_maglev", "lb_flows", "lb_affinity", "lb_config")
U32 = struct.Struct("<I")


class Lb:
    """The loaded object plus typed writers for the LB maps."""

    def __init__(self, dp: Datapath) -> None:
        self.dp = dp
        self.maps = {n: dp.obj.map(n) for n in LB_MAPS}
        self.from_netdev = dp.obj.program("from_netdev")
        self.to_netdev = dp.obj.program("to_netdev")
        self.tables: list[Map] = []

    def reset(self) -> None:
        for name in LB_MAPS:
            if name != "lb_config":
                self.maps[name].clear()
        self.config(LoadBalancerState())
        for t in self.tables:
            t.close()
        self.tables.clear()

    def config(self, state: LoadBalancerState) -> None:
        self.maps["lb_config"].update(U32.pack(0), encode_node_config(state))

    def backend(self, bid: int, addr: str, port: int = BPORT, local: bool = False,
                proto: int = IPPROTO_TCP) -> None:
        entry = LbBackendEntry(IPv4Address(addr), port, proto, local)
        self.maps["lb_backends"].update(U32.pack(bid), encode_backend(entry))

    def service(self, addr: str, port: int, svc: LbService, proto: int = IPPROTO_TCP) -> None:
        for i, b in enumerate(svc.backends, 1):
            self.maps["lb_slots"].update(encode_slot(svc.service_id, i), U32.pack(b))
        if svc.maglev:
            table = new_maglev_table(svc.service_id, svc.maglev)
            self.tables.append(table)
            self.maps["lb_maglev"].update(U32.pack(svc.service_id), U32.pack(table.fd))
        self.maps["lb_services"].update(encode_frontend(LbFrontend(IPv4Address(addr), port, proto)),
                                        encode_service(svc))

    def flows(self) -> list[tuple[S.LbFlowKey, S.LbFlowValue]]:
        return [(S.LbFlowKey.from_buffer_copy(k), S.LbFlowValue.from_buffer_copy(v))
                for k, v in self.maps["lb_flows"].items()]


@pytest.fixture(scope="module")
def lb_module() -> Iterator[Lb]:
    dp = Datapath(build_object())
    try:
        yield Lb(dp)
    finally:
        dp.close()


@pytest.fixture
def lb(lb_module: Lb) -> Iterator[Lb]:
    dp = lb_module.dp
    dp.reset()
    lb_module.reset()
    dp.set_endpoint(A, A_EP, A_ID, ingress=False, egress=False)
    for i, addr in BACKENDS.items():
        dp.set_ipcache(f"{addr}/32", BE_ID[i])
        lb_module.backend(i, addr)
    try:
        yield lb_module
    finally:
        lb_module.reset()
        dp.reset()


# ---------------------------------------------------------------- frame inspection


def csum(data: bytes) -> int:
    return frames.checksum(data)


def parse(frame: bytes) -> dict[str, object]:
    """IPv4 + TCP/UDP fields of an output frame, with both checksums verified."""
    ip = frame[14:]
    ihl = (ip[0] & 0x0F) * 4
    total = struct.unpack("!H", ip[2:4])[0]
    assert csum(ip[:ihl]) == 0, "IPv4 header checksum"
    proto = ip[9]
    src, dst = str(IPv4Address(ip[12:16])), str(IPv4Address(ip[16:20]))
    l4 = ip[ihl:total]
    pseudo = IPv4Address(src).packed + IPv4Address(dst).packed + struct.pack("!BBH", 0, proto, len(l4))
    assert csum(pseudo + l4) == 0, "L4 checksum"
    sport, dport = struct.unpack("!HH", l4[:4])
    return {"src": src, "dst": dst, "sport": sport, "dport": dport, "ihl": ihl, "options": ip[20:ihl],
            "proto": proto}


def syn(src: str, dst: str, sport: int, dport: int = VPORT, flags: int = TCP_SYN) -> bytes:
    return frames.tcp_frame(src, dst, sport, dport, flags, payload=b"hello")


def three(backends: tuple[int, ...] = (1, 2, 3), **kw: object) -> LbService:
    return LbService(service_id=7, backends=backends, **kw)  # type: ignore[arg-type]


# ---------------------------------------------------------------- east-west (from_pod / to_pod)


def test_clusterip_random_spreads_over_backends_with_valid_checksums(lb: Lb) -> None:
    lb.service(VIP, VPORT, three())
    seen: Counter[str] = Counter()
    for sport in range(40000, 40090):
        res = lb.dp.from_pod.test_run(syn(A, VIP, sport))
        assert res.retval == TC_ACT_OK
        out = parse(res.data_out)
        assert (out["src"], out["sport"], out["dport"]) == (A, sport, BPORT)
        seen[str(out["dst"])] += 1
    assert set(seen) == set(BACKENDS.values())
    assert min(seen.values()) >= 10, seen  # 90 flows over 3 backends: each gets a fair share


def test_udp_service_translates(lb: Lb) -> None:
    lb.backend(9, "10.0.2.9", 5353, proto=IPPROTO_UDP)
    lb.service(VIP, 53, LbService(service_id=9, backends=(9,)), proto=IPPROTO_UDP)
    res = lb.dp.from_pod.test_run(frames.udp_frame(A, VIP, 41000, 53, b"query"))
    out = parse(res.data_out)
    assert (res.retval, out["dst"], out["dport"]) == (TC_ACT_OK, "10.0.2.9", 5353)


def test_reply_gets_the_frontend_back_as_source(lb: Lb) -> None:
    lb.service(VIP, VPORT, three((2,)))
    assert lb.dp.from_pod.test_run(syn(A, VIP, 40500)).retval == TC_ACT_OK
    res = lb.dp.to_pod.test_run(syn(BACKENDS[2], A, BPORT, 40500, TCP_SYN | TCP_ACK))
    out = parse(res.data_out)
    assert res.retval == TC_ACT_OK
    assert (out["src"], out["sport"], out["dst"], out["dport"]) == (VIP, VPORT, A, 40500)


def test_established_flow_keeps_its_backend_when_another_is_removed(lb: Lb) -> None:
    lb.service(VIP, VPORT, three())
    first = {sport: parse(lb.dp.from_pod.test_run(syn(A, VIP, sport)).data_out)["dst"]
             for sport in range(42000, 42030)}
    # Remove backend 3: its slot goes, the service keeps 2 slots; flows on 1 and 2 must not move.
    lb.maps["lb_slots"].delete(encode_slot(7, 3))
    lb.maps["lb_backends"].delete(U32.pack(3))
    lb.service(VIP, VPORT, three((1, 2)))
    for sport, dst in first.items():
        again = parse(lb.dp.from_pod.test_run(syn(A, VIP, sport, flags=TCP_ACK)).data_out)["dst"]
        if dst == BACKENDS[3]:
            assert again in (BACKENDS[1], BACKENDS[2])
        else:
            assert again == dst, sport


def test_policy_sees_the_backend_identity(lb: Lb) -> None:
    """Translate before policy (Cilium's bpf_lxc): egress allowed to backend 1's identity only."""
    lb.dp.set_endpoint(A, A_EP, A_ID, ingress=False, egress=True)
    lb.dp.set_policy(A_EP, [Rule(Direction.EGRESS, BE_ID[1], IPPROTO_TCP, BPORT, 16, cookie=5)])
    lb.service(VIP, VPORT, three((1,)))
    assert lb.dp.from_pod.test_run(syn(A, VIP, 43000)).retval == TC_ACT_OK
    lb.service("10.96.0.11", VPORT, LbService(service_id=8, backends=(2,)))
    assert lb.dp.from_pod.test_run(syn(A, "10.96.0.11", 43001)).retval == TC_ACT_SHOT
    ok, denied = lb.dp.events()
    assert (ok.dst_identity, ok.cookie) == (BE_ID[1], 5)
    assert (denied.dst_identity, denied.reason) == (BE_ID[2], S.FlowReason.DEFAULT_DENY)


def test_frontend_without_backends_drops_with_reason(lb: Lb) -> None:
    lb.service(VIP, VPORT, LbService(service_id=7, backends=()))
    assert lb.dp.from_pod.test_run(syn(A, VIP, 44000)).retval == TC_ACT_SHOT
    [ev] = lb.dp.events()
    assert ev.reason == S.REASON_NO_SERVICE_BACKEND


def test_session_affinity_pins_a_client_to_one_backend(lb: Lb) -> None:
    lb.service(VIP, VPORT, three(affinity_timeout_s=600))
    dsts = {parse(lb.dp.from_pod.test_run(syn(A, VIP, sport)).data_out)["dst"]
            for sport in range(45000, 45040)}
    assert len(dsts) == 1


def maglev_table(size: int, backends: tuple[int, ...]) -> tuple[int, ...]:
    """A table that is easy to predict (not Maglev's permutation: that is compile's job)."""
    return tuple(backends[(i * 7) % len(backends)] for i in range(size))


def test_maglev_picks_the_slot_of_the_tuple_hash(lb: Lb) -> None:
    table = maglev_table(251, (1, 2, 3))
    lb.service(VIP, VPORT, three(maglev=table))
    seen = set()
    for sport in range(46000, 46060):
        out = parse(lb.dp.from_pod.test_run(syn(A, VIP, sport)).data_out)
        slot = tuple_hash(IPv4Address(A), IPv4Address(VIP), sport, VPORT, IPPROTO_TCP) % 251
        assert out["dst"] == BACKENDS[table[slot]], sport
        seen.add(out["dst"])
    assert len(seen) == 3


def test_maglev_choice_is_the_same_on_another_node(lb: Lb) -> None:
    """Two independent loads of the object (two nodes) with the same table choose alike."""
    table = maglev_table(509, (1, 2, 3))
    lb.service(VIP, VPORT, three(maglev=table))
    picks = [parse(lb.dp.from_pod.test_run(syn(A, VIP, s)).data_out)["dst"] for s in range(47000, 47020)]
    other = Lb(Datapath(build_object()))
    try:
        other.dp.set_endpoint(A, A_EP, A_ID, ingress=False, egress=False)
        for i, addr in BACKENDS.items():
            other.backend(i, addr)
        other.service(VIP, VPORT, three(maglev=table))
        again = [parse(other.dp.from_pod.test_run(syn(A, VIP, s)).data_out)["dst"]
                 for s in range(47000, 47020)]
    finally:
        other.reset()
        other.dp.close()
    assert picks == again


# ---------------------------------------------------------------- north-south (from_netdev / to_netdev)


def enable(lb: Lb) -> None:
    lb.config(LoadBalancerState(enabled=True, snat_address=IPv4Address(NODE_IP)))


def test_netdev_ignores_services_when_disabled_and_clusterip_from_outside(lb: Lb) -> None:
    lb.service(NODE_IP, 30080, three(external=True))
    assert lb.from_netdev.test_run(syn(CLIENT, NODE_IP, 50000, 30080)).retval == TC_ACT_OK
    assert parse(lb.from_netdev.test_run(syn(CLIENT, NODE_IP, 50000, 30080)).data_out)["dst"] == NODE_IP
    enable(lb)
    lb.service(VIP, VPORT, three())  # ClusterIP only: not translated at the netdev
    assert parse(lb.from_netdev.test_run(syn(CLIENT, VIP, 50001)).data_out)["dst"] == VIP


def test_nodeport_snat_to_remote_backend_and_reply(lb: Lb) -> None:
    enable(lb)
    lb.service(NODE_IP, 30080, three((2,), external=True))
    res = lb.from_netdev.test_run(syn(CLIENT, NODE_IP, 50100, 30080))
    out = parse(res.data_out)
    assert res.retval == TC_ACT_REDIRECT
    assert (out["src"], out["dst"], out["dport"]) == (NODE_IP, BACKENDS[2], BPORT)
    snat_port = int(out["sport"])  # type: ignore[call-overload]
    reply = lb.from_netdev.test_run(syn(BACKENDS[2], NODE_IP, BPORT, snat_port, TCP_SYN | TCP_ACK))
    back = parse(reply.data_out)
    assert reply.retval == TC_ACT_REDIRECT
    assert (back["src"], back["sport"], back["dst"], back["dport"]) == (NODE_IP, 30080, CLIENT, 50100)


def test_snat_ports_do_not_collide_between_clients(lb: Lb) -> None:
    enable(lb)
    lb.service(NODE_IP, 30080, three((2,), external=True))
    a = parse(lb.from_netdev.test_run(syn(CLIENT, NODE_IP, 50200, 30080)).data_out)
    b = parse(lb.from_netdev.test_run(syn("172.31.9.10", NODE_IP, 50200, 30080)).data_out)
    assert a["sport"] != b["sport"]


def test_loadbalancer_ip_to_local_backend_is_dnat_only(lb: Lb) -> None:
    enable(lb)
    lb.backend(4, "10.0.1.4", local=True)
    lb.service("192.0.2.50", 80, LbService(service_id=11, backends=(4,), external=True, dsr=True))
    res = lb.from_netdev.test_run(syn(CLIENT, "192.0.2.50", 50300, 80))
    out = parse(res.data_out)
    assert res.retval == TC_ACT_OK  # the stack forwards it to the pod
    assert (out["src"], out["dst"], out["dport"], out["ihl"]) == (CLIENT, "10.0.1.4", BPORT, 20)
    reply = lb.to_netdev.test_run(syn("10.0.1.4", CLIENT, BPORT, 50300, TCP_SYN | TCP_ACK))
    back = parse(reply.data_out)
    assert (back["src"], back["sport"], back["dst"]) == ("192.0.2.50", 80, CLIENT)


def test_dsr_carries_the_frontend_in_an_ip_option_and_the_backend_node_replies(lb: Lb) -> None:
    enable(lb)
    lb.service(NODE_IP, 30080, three((2,), external=True, dsr=True))
    res = lb.from_netdev.test_run(syn(CLIENT, NODE_IP, 50400, 30080))
    out = parse(res.data_out)
    assert res.retval == TC_ACT_REDIRECT
    assert (out["src"], out["dst"], out["dport"], out["ihl"]) == (CLIENT, BACKENDS[2], BPORT, 28)
    assert out["options"] == bytes([0x9A, 8]) + struct.pack("!H", 30080) + IPv4Address(NODE_IP).packed
    # Later segments of the flow carry no option (they would outgrow the MTU).
    later = parse(lb.from_netdev.test_run(syn(CLIENT, NODE_IP, 50400, 30080, TCP_ACK)).data_out)
    assert (later["dst"], later["ihl"]) == (BACKENDS[2], 20)
    # The LB node holds no reverse entry: replies never come back through it.
    assert [k.kind for k, _ in lb.flows()] == [S.LB_FLOW_SVC]

    # Now play the backend's node: the option is read, stripped, remembered.
    lb.reset()
    enable(lb)
    arrived = lb.from_netdev.test_run(res.data_out)
    inner = parse(arrived.data_out)
    assert arrived.retval == TC_ACT_OK
    assert (inner["src"], inner["dst"], inner["dport"], inner["ihl"]) == (CLIENT, BACKENDS[2], BPORT, 20)
    assert len(arrived.data_out) == len(res.data_out) - 8
    reply = lb.to_netdev.test_run(syn(BACKENDS[2], CLIENT, BPORT, 50400, TCP_SYN | TCP_ACK))
    back = parse(reply.data_out)
    assert (back["src"], back["sport"], back["dst"], back["dport"]) == (NODE_IP, 30080, CLIENT, 50400)


def test_pod_and_netdev_reverse_entries_do_not_mix(lb: Lb) -> None:
    """An east-west reverse entry is not used by to_netdev (and vice versa)."""
    lb.service(VIP, VPORT, three((2,)))
    lb.dp.from_pod.test_run(syn(A, VIP, 51000))
    reply = syn(BACKENDS[2], A, BPORT, 51000, TCP_SYN | TCP_ACK)
    assert parse(lb.to_netdev.test_run(reply).data_out)["src"] == BACKENDS[2]


def test_struct_sizes_match_the_maps(lb: Lb) -> None:
    assert lb.maps["lb_services"].info().key_size == ctypes.sizeof(S.LbServiceKey)
    assert lb.maps["lb_flows"].info().value_size == ctypes.sizeof(S.LbFlowValue)
