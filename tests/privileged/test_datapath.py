"""The C datapath (bpf/datapath.c) on synthetic frames through BPF_PROG_TEST_RUN.

One object is loaded per module; every test starts from empty maps. Node layout used below:
pod A 10.0.1.1 (endpoint 11, identity 1001), pod B 10.0.1.2 (endpoint 12, identity 1002),
10.0.2.0/24 is identity 2000, anything else is world (2).
"""

from __future__ import annotations

import time
from collections.abc import Iterator

import pytest
from datapath_harness import TC_ACT_OK, TC_ACT_SHOT, Datapath, Rule, build_object, ip_of, port_of

from meshctl.dataplane import frames
from meshctl.dataplane.frames import (
    IPPROTO_ICMP,
    IPPROTO_TCP,
    IPPROTO_UDP,
    TCP_ACK,
    TCP_FIN,
    TCP_RST,
    TCP_SYN,
)
from meshctl.dataplane.structs import ConfigFlags, CtFlags, CtValue, DatapathConfig, FlowReason, Verdict
from meshctl.nodestate import AUDIT_MAP_BIT, Direction

pytestmark = pytest.mark.privileged

A, B = "10.0.1.1", "10.0.1.2"
A_EP, B_EP = 11, 12
A_ID, B_ID = 1001, 1002
NET2, NET2_HOST, NET2_ID = "10.0.2.0/24", "10.0.2.7", 2000
WORLD_HOST = "192.0.2.10"
WORLD = 2
ING, EGR = Direction.INGRESS, Direction.EGRESS
SEC = 1_000_000_000


@pytest.fixture(scope="module")
def dp_module() -> Iterator[Datapath]:
    path = build_object()
    dp = Datapath(path)
    try:
        yield dp
    finally:
        dp.close()


@pytest.fixture
def dp(dp_module: Datapath) -> Iterator[Datapath]:
    """The loaded datapath with pods A and B (both enforcing nothing yet) and the ipcache."""
    dp_module.reset()
    dp_module.set_endpoint(A, A_EP, A_ID, ingress=False, egress=False)
    dp_module.set_endpoint(B, B_EP, B_ID, ingress=False, egress=False)
    dp_module.set_ipcache(NET2, NET2_ID)
    try:
        yield dp_module
    finally:
        dp_module.reset()


def enforce(dp: Datapath, addr: str, ingress: bool = False, egress: bool = False) -> None:
    ep, ident = (A_EP, A_ID) if addr == A else (B_EP, B_ID)
    dp.set_endpoint(addr, ep, ident, ingress=ingress, egress=egress)


def run_from(dp: Datapath, frame: bytes) -> int:
    return dp.from_pod.test_run(frame).retval


def run_to(dp: Datapath, frame: bytes) -> int:
    return dp.to_pod.test_run(frame).retval


# ---------------------------------------------------------------- policy verdicts


def test_default_deny_drops_and_emits_event(dp: Datapath) -> None:
    enforce(dp, A, egress=True)
    frame = frames.udp_frame(A, B, 40000, 53)
    assert run_from(dp, frame) == TC_ACT_SHOT
    [ev] = dp.events()
    assert (ip_of(ev.saddr_be), ip_of(ev.daddr_be)) == (A, B)
    assert (port_of(ev.sport_be), port_of(ev.dport_be), ev.protocol) == (40000, 53, IPPROTO_UDP)
    assert (ev.direction, ev.verdict, ev.reason) == (EGR, Verdict.DROPPED, FlowReason.DEFAULT_DENY)
    assert (ev.src_identity, ev.dst_identity, ev.endpoint_id, ev.cookie) == (A_ID, B_ID, A_EP, 0)
    assert ev.length == len(frame)
    assert ev.timestamp_ns > 0


def test_allow_exact_port_ingress(dp: Datapath) -> None:
    enforce(dp, B, ingress=True)
    dp.set_policy(B_EP, [Rule(ING, A_ID, IPPROTO_TCP, 80, 16, cookie=7)])
    assert run_to(dp, frames.tcp_frame(A, B, 40000, 80)) == TC_ACT_OK
    assert run_to(dp, frames.tcp_frame(A, B, 40001, 81)) == TC_ACT_SHOT
    assert run_to(dp, frames.tcp_frame(WORLD_HOST, B, 40002, 80)) == TC_ACT_SHOT
    assert run_to(dp, frames.udp_frame(A, B, 40003, 80)) == TC_ACT_SHOT
    evs = dp.events()
    assert [(e.verdict, e.reason, e.cookie) for e in evs] == [
        (Verdict.FORWARDED, FlowReason.ALLOWED, 7),
        (Verdict.DROPPED, FlowReason.DEFAULT_DENY, 0),
        (Verdict.DROPPED, FlowReason.DEFAULT_DENY, 0),
        (Verdict.DROPPED, FlowReason.DEFAULT_DENY, 0),
    ]
    assert (evs[0].src_identity, evs[0].dst_identity, evs[0].direction) == (A_ID, B_ID, ING)
    assert evs[2].src_identity == WORLD


def test_identity_wildcard_matches_every_peer(dp: Datapath) -> None:
    enforce(dp, B, ingress=True)
    dp.set_policy(B_EP, [Rule(ING, 0, IPPROTO_TCP, 443, 16, cookie=9)])
    for src in (A, WORLD_HOST, NET2_HOST):
        assert run_to(dp, frames.tcp_frame(src, B, 41000, 443)) == TC_ACT_OK, src
    assert run_to(dp, frames.tcp_frame(A, B, 41000, 444)) == TC_ACT_SHOT
    assert [e.cookie for e in dp.events()][:3] == [9, 9, 9]


def test_ipcache_prefix_gives_peer_identity(dp: Datapath) -> None:
    enforce(dp, A, egress=True)
    dp.set_policy(A_EP, [Rule(EGR, NET2_ID, IPPROTO_TCP, 5432, 16, cookie=3)])
    assert run_from(dp, frames.tcp_frame(A, NET2_HOST, 42000, 5432)) == TC_ACT_OK
    assert run_from(dp, frames.tcp_frame(A, "10.0.3.7", 42000, 5432)) == TC_ACT_SHOT
    ok, denied = dp.events()
    assert ok.dst_identity == NET2_ID and denied.dst_identity == WORLD


def test_protocol_any(dp: Datapath) -> None:
    enforce(dp, A, egress=True)
    dp.set_policy(A_EP, [Rule(EGR, B_ID, cookie=5)])
    assert run_from(dp, frames.udp_frame(A, B, 40000, 53)) == TC_ACT_OK
    assert run_from(dp, frames.tcp_frame(A, B, 40000, 8443)) == TC_ACT_OK
    assert run_from(dp, frames.icmp_echo_frame(A, B, ident=77)) == TC_ACT_OK
    assert run_from(dp, frames.tcp_frame(A, NET2_HOST, 40000, 8443)) == TC_ACT_SHOT


def test_all_ports_of_one_protocol(dp: Datapath) -> None:
    enforce(dp, A, egress=True)
    dp.set_policy(A_EP, [Rule(EGR, B_ID, IPPROTO_TCP, 0, 0, cookie=6)])
    assert run_from(dp, frames.tcp_frame(A, B, 40000, 1)) == TC_ACT_OK
    assert run_from(dp, frames.tcp_frame(A, B, 40000, 65535)) == TC_ACT_OK
    assert run_from(dp, frames.udp_frame(A, B, 40000, 53)) == TC_ACT_SHOT


@pytest.mark.parametrize(("port", "verdict"), [(8079, TC_ACT_SHOT), (8080, TC_ACT_OK), (8083, TC_ACT_OK),
                                               (8087, TC_ACT_OK), (8088, TC_ACT_SHOT)])
def test_port_range_as_prefix(dp: Datapath, port: int, verdict: int) -> None:
    enforce(dp, B, ingress=True)
    dp.set_policy(B_EP, [Rule(ING, A_ID, IPPROTO_TCP, 8080, 13, cookie=8)])  # 8080-8087
    assert run_to(dp, frames.tcp_frame(A, B, 40000, port)) == verdict


def test_identity_deny_beats_wildcard_allow(dp: Datapath) -> None:
    enforce(dp, B, ingress=True)
    dp.set_policy(B_EP, [Rule(ING, 0, IPPROTO_TCP, 0, 0, cookie=1),
                         Rule(ING, A_ID, IPPROTO_TCP, 80, 16, cookie=2, deny=True)])
    assert run_to(dp, frames.tcp_frame(A, B, 40000, 80)) == TC_ACT_SHOT
    assert run_to(dp, frames.tcp_frame(A, B, 40000, 81)) == TC_ACT_OK
    assert run_to(dp, frames.tcp_frame(WORLD_HOST, B, 40000, 80)) == TC_ACT_OK
    evs = dp.events()
    assert [(e.reason, e.cookie) for e in evs] == [
        (FlowReason.EXPLICIT_DENY, 2), (FlowReason.ALLOWED, 1), (FlowReason.ALLOWED, 1)]


def test_wildcard_deny_beats_identity_allow(dp: Datapath) -> None:
    enforce(dp, B, ingress=True)
    dp.set_policy(B_EP, [Rule(ING, A_ID, cookie=3),  # A: any protocol
                         Rule(ING, 0, IPPROTO_TCP, 22, 16, cookie=4, deny=True)])
    assert run_to(dp, frames.tcp_frame(A, B, 40000, 22)) == TC_ACT_SHOT
    assert run_to(dp, frames.tcp_frame(A, B, 40000, 23)) == TC_ACT_OK
    evs = dp.events()
    assert [(e.reason, e.cookie) for e in evs] == [(FlowReason.EXPLICIT_DENY, 4), (FlowReason.ALLOWED, 3)]


def test_identity_allow_reported_before_wildcard_allow(dp: Datapath) -> None:
    enforce(dp, B, ingress=True)
    dp.set_policy(B_EP, [Rule(ING, 0, IPPROTO_TCP, 80, 16, cookie=10),
                         Rule(ING, A_ID, IPPROTO_TCP, 0, 0, cookie=11)])
    assert run_to(dp, frames.tcp_frame(A, B, 40000, 80)) == TC_ACT_OK
    assert [e.cookie for e in dp.events()] == [11]


def test_direction_is_part_of_the_key(dp: Datapath) -> None:
    enforce(dp, A, ingress=True, egress=True)
    dp.set_policy(A_EP, [Rule(ING, B_ID, IPPROTO_TCP, 80, 16, cookie=12)])
    assert run_from(dp, frames.tcp_frame(A, B, 40000, 80)) == TC_ACT_SHOT
    assert run_to(dp, frames.tcp_frame(B, A, 40000, 80)) == TC_ACT_OK


def test_not_enforced_direction_passes_and_tracks(dp: Datapath) -> None:
    enforce(dp, A, ingress=True)  # egress not enforced, no policy at all
    assert run_from(dp, frames.tcp_frame(A, WORLD_HOST, 40000, 443)) == TC_ACT_OK
    [ev] = dp.events()
    assert (ev.verdict, ev.reason, ev.cookie) == (Verdict.FORWARDED, FlowReason.NOT_ENFORCED, 0)
    ct = dp.ct_get(dp.ct_key(A, WORLD_HOST, 40000, 443, IPPROTO_TCP, EGR))
    assert ct is not None and ct.cookie == 0 and ct.packets == 1
    # Switching to enforcement keeps the tracked flow (as in Cilium); a new flow is denied.
    enforce(dp, A, ingress=True, egress=True)
    assert run_from(dp, frames.tcp_frame(A, WORLD_HOST, 40000, 443, TCP_ACK)) == TC_ACT_OK
    assert run_to(dp, frames.tcp_frame(WORLD_HOST, A, 443, 40000, TCP_ACK)) == TC_ACT_OK
    assert run_from(dp, frames.tcp_frame(A, WORLD_HOST, 40001, 443)) == TC_ACT_SHOT


def test_no_endpoint_drops_ipv4(dp: Datapath) -> None:
    assert run_from(dp, frames.udp_frame("10.0.9.9", B, 1000, 53)) == TC_ACT_SHOT
    assert run_to(dp, frames.udp_frame(A, "10.0.9.9", 1000, 53)) == TC_ACT_SHOT
    evs = dp.events()
    assert [(e.direction, e.reason) for e in evs] == [
        (EGR, FlowReason.NO_ENDPOINT), (ING, FlowReason.NO_ENDPOINT)]
    assert [(e.src_identity, e.dst_identity, e.endpoint_id) for e in evs] == [
        (WORLD, B_ID, 0), (A_ID, WORLD, 0)]


def test_malformed_packet_dropped(dp: Datapath) -> None:
    assert run_from(dp, frames.truncated_tcp_frame(A, B)) == TC_ACT_SHOT
    [ev] = dp.events()
    assert ev.reason == FlowReason.MALFORMED


# ---------------------------------------------------------------- connection tracking


def test_udp_reply_passes_unsolicited_drops(dp: Datapath) -> None:
    enforce(dp, A, ingress=True, egress=True)
    dp.set_policy(A_EP, [Rule(EGR, 0, IPPROTO_UDP, 53, 16, cookie=21)])
    assert run_from(dp, frames.udp_frame(A, WORLD_HOST, 40000, 53)) == TC_ACT_OK
    assert run_to(dp, frames.udp_frame(WORLD_HOST, A, 53, 40000)) == TC_ACT_OK
    assert run_to(dp, frames.udp_frame(WORLD_HOST, A, 53, 40001)) == TC_ACT_SHOT  # other port
    assert run_to(dp, frames.udp_frame(WORLD_HOST, A, 54, 40000)) == TC_ACT_SHOT
    evs = dp.events()  # no event for the reply
    assert [(e.verdict, e.reason) for e in evs] == [
        (Verdict.FORWARDED, FlowReason.ALLOWED), (Verdict.DROPPED, FlowReason.DEFAULT_DENY),
        (Verdict.DROPPED, FlowReason.DEFAULT_DENY)]
    ct = dp.ct_get(dp.ct_key(A, WORLD_HOST, 40000, 53, IPPROTO_UDP, EGR))
    assert ct is not None and ct.packets == 2 and ct.flags & CtFlags.SEEN_REPLY and ct.cookie == 21


def test_same_node_pods_track_both_sides(dp: Datapath) -> None:
    enforce(dp, A, ingress=True, egress=True)
    enforce(dp, B, ingress=True, egress=True)
    dp.set_policy(A_EP, [Rule(EGR, B_ID, IPPROTO_TCP, 80, 16, cookie=31)])
    dp.set_policy(B_EP, [Rule(ING, A_ID, IPPROTO_TCP, 80, 16, cookie=32)])
    syn = frames.tcp_frame(A, B, 40000, 80, TCP_SYN)
    synack = frames.tcp_frame(B, A, 80, 40000, TCP_SYN | TCP_ACK)
    assert run_from(dp, syn) == TC_ACT_OK  # A egress
    assert run_to(dp, syn) == TC_ACT_OK  # B ingress
    assert run_from(dp, synack) == TC_ACT_OK  # B egress: reply of what B accepted
    assert run_to(dp, synack) == TC_ACT_OK  # A ingress: reply of what A opened
    assert run_from(dp, frames.tcp_frame(B, A, 80, 40001, TCP_SYN)) == TC_ACT_SHOT
    assert [e.cookie for e in dp.events()] == [31, 32, 0]


def test_tcp_established_skips_policy_within_a_revision(dp: Datapath) -> None:
    enforce(dp, A, ingress=True, egress=True)
    dp.set_policy(A_EP, [Rule(EGR, B_ID, IPPROTO_TCP, 80, 16, cookie=41)])
    key = dp.ct_key(A, B, 40000, 80, IPPROTO_TCP, EGR)
    t0 = time.monotonic_ns()
    assert run_from(dp, frames.tcp_frame(A, B, 40000, 80, TCP_SYN)) == TC_ACT_OK
    ct = dp.ct_get(key)
    assert ct is not None and not ct.flags & CtFlags.SEEN_REPLY
    assert t0 + 59 * SEC < ct.expires_ns <= time.monotonic_ns() + 60 * SEC  # syn timeout
    assert run_to(dp, frames.tcp_frame(B, A, 80, 40000, TCP_SYN | TCP_ACK)) == TC_ACT_OK
    ct = dp.ct_get(key)
    assert ct is not None and ct.flags & CtFlags.SEEN_REPLY
    assert ct.expires_ns > t0 + 21000 * SEC  # established timeout
    dp.set_policy(A_EP, [])  # written but not committed (no revision bump): it carries on
    assert run_from(dp, frames.tcp_frame(A, B, 40000, 80, TCP_ACK)) == TC_ACT_OK
    assert run_from(dp, frames.tcp_frame(A, B, 40002, 80, TCP_SYN)) == TC_ACT_SHOT
    assert [e.reason for e in dp.events()] == [FlowReason.ALLOWED, FlowReason.DEFAULT_DENY]


def test_expired_entry_is_reevaluated(dp: Datapath) -> None:
    enforce(dp, A, ingress=True, egress=True)
    key = dp.ct_key(A, WORLD_HOST, 40000, 53, IPPROTO_UDP, EGR)
    reply = frames.udp_frame(WORLD_HOST, A, 53, 40000)
    dp.ct_put(key, CtValue(expires_ns=time.monotonic_ns() + 100 * SEC, cookie=5))
    assert run_to(dp, reply) == TC_ACT_OK  # live entry: reply passes
    dp.ct_put(key, CtValue(expires_ns=time.monotonic_ns() - SEC, cookie=5))
    assert run_to(dp, reply) == TC_ACT_SHOT  # expired: policy says default deny
    # An expired entry on an allowed flow is replaced by a fresh one.
    dp.set_policy(A_EP, [Rule(EGR, 0, IPPROTO_UDP, 53, 16, cookie=6)])
    assert run_from(dp, frames.udp_frame(A, WORLD_HOST, 40000, 53)) == TC_ACT_OK
    ct = dp.ct_get(key)
    assert ct is not None and ct.cookie == 6 and ct.packets == 1 and ct.expires_ns > time.monotonic_ns()
    assert [e.reason for e in dp.events()] == [FlowReason.DEFAULT_DENY, FlowReason.ALLOWED]


@pytest.mark.parametrize("flag", [TCP_FIN | TCP_ACK, TCP_RST])
def test_fin_or_rst_sets_closing(dp: Datapath, flag: int) -> None:
    dp.set_config(DatapathConfig(ct_timeout_close_s=3))
    enforce(dp, A, egress=True)
    dp.set_policy(A_EP, [Rule(EGR, B_ID, IPPROTO_TCP, 80, 16, cookie=51)])
    key = dp.ct_key(A, B, 40000, 80, IPPROTO_TCP, EGR)
    assert run_from(dp, frames.tcp_frame(A, B, 40000, 80, TCP_SYN)) == TC_ACT_OK
    assert run_to(dp, frames.tcp_frame(B, A, 80, 40000, TCP_SYN | TCP_ACK)) == TC_ACT_OK
    assert run_from(dp, frames.tcp_frame(A, B, 40000, 80, flag)) == TC_ACT_OK
    ct = dp.ct_get(key)
    assert ct is not None and ct.flags & CtFlags.CLOSING
    assert ct.expires_ns <= time.monotonic_ns() + 3 * SEC
    # A reply (the peer's FIN-ACK) still passes while closing.
    assert run_to(dp, frames.tcp_frame(B, A, 80, 40000, TCP_FIN | TCP_ACK)) == TC_ACT_OK


def test_config_timeouts_and_defaults(dp: Datapath) -> None:
    enforce(dp, A, egress=True)
    dp.set_policy(A_EP, [Rule(EGR, 0, IPPROTO_UDP, 0, 0, cookie=61)])
    t0 = time.monotonic_ns()
    assert run_from(dp, frames.udp_frame(A, WORLD_HOST, 40000, 53)) == TC_ACT_OK
    ct = dp.ct_get(dp.ct_key(A, WORLD_HOST, 40000, 53, IPPROTO_UDP, EGR))
    assert ct is not None and t0 + 60 * SEC <= ct.expires_ns <= time.monotonic_ns() + 60 * SEC
    dp.set_config(DatapathConfig(ct_timeout_non_tcp_s=5))
    t0 = time.monotonic_ns()
    assert run_from(dp, frames.udp_frame(A, WORLD_HOST, 40001, 53)) == TC_ACT_OK
    ct = dp.ct_get(dp.ct_key(A, WORLD_HOST, 40001, 53, IPPROTO_UDP, EGR))
    assert ct is not None and t0 + 5 * SEC <= ct.expires_ns <= time.monotonic_ns() + 5 * SEC


def test_icmp_echo_reply_passes(dp: Datapath) -> None:
    enforce(dp, A, ingress=True, egress=True)
    dp.set_policy(A_EP, [Rule(EGR, 0, IPPROTO_ICMP, frames.ICMP_ECHO, 16, cookie=71)])  # ICMP type in dport
    assert run_from(dp, frames.icmp_echo_frame(A, WORLD_HOST, ident=0x1234)) == TC_ACT_OK
    assert run_to(dp, frames.icmp_echo_frame(WORLD_HOST, A, ident=0x1234, reply=True)) == TC_ACT_OK
    assert run_to(dp, frames.icmp_echo_frame(WORLD_HOST, A, ident=0x4321, reply=True)) == TC_ACT_SHOT
    ct = dp.ct_get(dp.ct_key(A, WORLD_HOST, 0x1234, 0x1234, IPPROTO_ICMP, EGR))
    assert ct is not None and ct.flags & CtFlags.SEEN_REPLY
    # Other ICMP types do not match the echo-request entry.
    assert run_from(dp, frames.icmp_frame(A, WORLD_HOST, 13)) == TC_ACT_SHOT
    evs = dp.events()
    assert [(e.reason, e.cookie) for e in evs] == [
        (FlowReason.ALLOWED, 71), (FlowReason.DEFAULT_DENY, 0), (FlowReason.DEFAULT_DENY, 0)]
    assert port_of(evs[0].sport_be) == port_of(evs[0].dport_be) == 0x1234


# ---------------------------------------------------------------- non-IPv4


def test_arp_passes_uncounted(dp: Datapath) -> None:
    enforce(dp, A, ingress=True, egress=True)
    arp = frames.arp_request_frame(A, B)
    assert run_from(dp, arp) == TC_ACT_OK
    assert run_to(dp, arp) == TC_ACT_OK
    assert dp.events() == []
    assert list(dp.maps["metrics"].keys()) == []


def test_ipv6_dropped_by_default_passed_by_config(dp: Datapath) -> None:
    frame = frames.ipv6_udp_frame("fd00::1", "fd00::2", 1000, 53)
    assert run_from(dp, frame) == TC_ACT_SHOT
    [ev] = dp.events()
    assert (ev.verdict, ev.reason) == (Verdict.DROPPED, FlowReason.IPV6)
    dp.set_config(DatapathConfig(flags=ConfigFlags.IPV6_PASS))
    assert run_from(dp, frame) == TC_ACT_OK
    assert run_to(dp, frame) == TC_ACT_OK
    assert dp.metric(Verdict.FORWARDED, FlowReason.NOT_ENFORCED, EGR) == (1, len(frame))
    assert dp.metric(Verdict.DROPPED, FlowReason.IPV6, EGR) == (1, len(frame))


# ---------------------------------------------------------------- counters and policy swap


def test_metrics_count_every_verdict(dp: Datapath) -> None:
    enforce(dp, A, ingress=True, egress=True)
    dp.set_policy(A_EP, [Rule(EGR, 0, IPPROTO_UDP, 53, 16, cookie=81)])
    query = frames.udp_frame(A, WORLD_HOST, 40000, 53, b"q" * 10)
    answer = frames.udp_frame(WORLD_HOST, A, 53, 40000, b"a" * 30)
    denied = frames.tcp_frame(A, WORLD_HOST, 40000, 25)
    for _ in range(3):
        assert run_from(dp, query) == TC_ACT_OK
        assert run_to(dp, answer) == TC_ACT_OK
    assert run_from(dp, denied) == TC_ACT_SHOT
    assert dp.metric(Verdict.FORWARDED, FlowReason.ALLOWED, EGR) == (3, 3 * len(query))
    assert dp.metric(Verdict.FORWARDED, FlowReason.ALLOWED, ING) == (3, 3 * len(answer))
    assert dp.metric(Verdict.DROPPED, FlowReason.DEFAULT_DENY, EGR) == (1, len(denied))
    assert dp.metric(Verdict.DROPPED, FlowReason.DEFAULT_DENY, ING) == (0, 0)
    assert len(dp.events()) == 2  # the new flow and the drop, not the established packets


# ---------------------------------------------------------------- staged policies (audit)


def test_staged_deny_forwards_and_reports_audit(dp: Datapath) -> None:
    """B enforces nothing yet; a staged policy would isolate its ingress and allow only :80. The
    datapath forwards by the enforced verdict, reports what the staged one would do, and counts
    the AUDIT verdict; the reply and later packets are not judged again."""
    dp.set_endpoint(B, B_EP, B_ID, ingress=False, egress=False, audit_ingress=True)
    dp.set_policy(B_EP | AUDIT_MAP_BIT, [Rule(ING, A_ID, IPPROTO_TCP, 80, 16, cookie=31)])
    syn = frames.tcp_frame(A, B, 40000, 5432)
    assert run_to(dp, syn) == TC_ACT_OK
    assert run_to(dp, frames.tcp_frame(A, B, 40000, 5432, TCP_ACK)) == TC_ACT_OK  # tracked: no audit
    assert run_to(dp, frames.tcp_frame(A, B, 40001, 80)) == TC_ACT_OK  # staged allows too: no audit
    assert [(e.verdict, e.reason, e.cookie, e.endpoint_id) for e in dp.events()] == [
        (Verdict.AUDIT, FlowReason.DEFAULT_DENY, 0, B_EP),
        (Verdict.FORWARDED, FlowReason.NOT_ENFORCED, 0, B_EP),
        (Verdict.FORWARDED, FlowReason.NOT_ENFORCED, 0, B_EP),
    ]
    assert dp.metric(Verdict.AUDIT, FlowReason.DEFAULT_DENY, ING) == (1, len(syn))
    assert dp.metric(Verdict.FORWARDED, FlowReason.NOT_ENFORCED, ING)[0] == 3


def test_staged_allow_of_a_drop_is_reported_and_still_dropped(dp: Datapath) -> None:
    enforce(dp, A, egress=True)  # enforced: default deny
    dp.set_endpoint(A, A_EP, A_ID, ingress=False, egress=True, audit_egress=True)
    dp.set_policy(A_EP | AUDIT_MAP_BIT, [Rule(EGR, B_ID, IPPROTO_UDP, 53, 16, cookie=41)])
    assert run_from(dp, frames.udp_frame(A, B, 40000, 53)) == TC_ACT_SHOT
    assert [(e.verdict, e.reason, e.cookie) for e in dp.events()] == [
        (Verdict.AUDIT, FlowReason.ALLOWED, 41), (Verdict.DROPPED, FlowReason.DEFAULT_DENY, 0)]


def test_audit_map_is_not_read_without_the_flag(dp: Datapath) -> None:
    """An endpoint without staged policies pays nothing: a left-over audit map changes nothing."""
    dp.set_policy(B_EP | AUDIT_MAP_BIT, [Rule(ING, A_ID, IPPROTO_TCP, 80, 16, cookie=31, deny=True)])
    assert run_to(dp, frames.tcp_frame(A, B, 40000, 80)) == TC_ACT_OK
    assert [e.verdict for e in dp.events()] == [Verdict.FORWARDED]


def test_inner_map_swap_changes_verdict(dp: Datapath) -> None:
    enforce(dp, B, ingress=True)
    allow = dp.new_policy_map([Rule(ING, A_ID, IPPROTO_TCP, 80, 16, cookie=91)])
    deny = dp.new_policy_map([Rule(ING, A_ID, IPPROTO_TCP, 80, 16, cookie=92, deny=True)])
    dp.install_policy(B_EP, allow)
    assert run_to(dp, frames.tcp_frame(A, B, 40000, 80)) == TC_ACT_OK
    dp.install_policy(B_EP, deny)
    assert run_to(dp, frames.tcp_frame(A, B, 40001, 80)) == TC_ACT_SHOT
    dp.maps["policy_maps"].clear()  # no inner map at all: default deny
    assert run_to(dp, frames.tcp_frame(A, B, 40002, 80)) == TC_ACT_SHOT
    assert [(e.reason, e.cookie) for e in dp.events()] == [
        (FlowReason.ALLOWED, 91), (FlowReason.EXPLICIT_DENY, 92), (FlowReason.DEFAULT_DENY, 0)]


def test_larger_inner_map_is_accepted(dp: Datapath) -> None:
    """The bench and big nodes need inner maps above POLICY_MAP_SIZE entries."""
    enforce(dp, B, ingress=True)
    inner = dp.new_policy_map([Rule(ING, A_ID, IPPROTO_TCP, 80, 16, cookie=93)], max_entries=65536)
    dp.install_policy(B_EP, inner)
    assert run_to(dp, frames.tcp_frame(A, B, 40000, 80)) == TC_ACT_OK


# ---------------------------------------------------------------- policy on established connections


def _established(dp: Datapath, sport: int = 40000) -> tuple[bytes, bytes, bytes]:
    """A -> B:80 opened and answered through both pods' programs; returns (key at A, data, reply)."""
    syn = frames.tcp_frame(A, B, sport, 80, TCP_SYN)
    synack = frames.tcp_frame(B, A, 80, sport, TCP_SYN | TCP_ACK)
    assert run_from(dp, syn) == TC_ACT_OK and run_to(dp, syn) == TC_ACT_OK
    assert run_from(dp, synack) == TC_ACT_OK and run_to(dp, synack) == TC_ACT_OK
    dp.events()
    return (dp.ct_key(A, B, sport, 80, IPPROTO_TCP, EGR), frames.tcp_frame(A, B, sport, 80, TCP_ACK),
            frames.tcp_frame(B, A, 80, sport, TCP_ACK))


def test_removed_allow_drops_the_next_forward_packet_and_keeps_the_entry(dp: Datapath) -> None:
    enforce(dp, A, ingress=True, egress=True)
    dp.set_policy(A_EP, [Rule(EGR, B_ID, IPPROTO_TCP, 80, 16, cookie=61)])
    key, data, reply = _established(dp)
    dp.set_policy(A_EP, [])
    dp.bump_policy_revision()  # what reconcile does once the change is written
    before = dp.ct_get(key)
    assert run_from(dp, data) == TC_ACT_SHOT
    [ev] = dp.events()
    assert (ev.verdict, ev.reason, ev.direction, ev.cookie) == (
        Verdict.DROPPED, FlowReason.DEFAULT_DENY, EGR, 0)
    assert (ev.src_identity, ev.dst_identity, ev.endpoint_id) == (A_ID, B_ID, A_EP)
    after = dp.ct_get(key)
    assert after is not None and before is not None
    # Kept as it was (cilium/cilium#9187): not deleted, not refreshed, not counted.
    assert (after.packets, after.expires_ns, after.policy_rev, after.cookie) == (
        before.packets, before.expires_ns, 0, 61)
    assert run_from(dp, data) == TC_ACT_SHOT  # judged again on every packet while denied
    assert len(dp.events()) == 1
    # A's ingress enforces and allows nothing, yet replies of the tracked connection still pass.
    assert run_to(dp, reply) == TC_ACT_OK
    assert dp.events() == []


def test_reallow_lets_the_kept_connection_continue(dp: Datapath) -> None:
    enforce(dp, A, egress=True)
    allow = [Rule(EGR, B_ID, IPPROTO_TCP, 80, 16, cookie=62)]
    dp.set_policy(A_EP, allow)
    key, data, _ = _established(dp)
    dp.set_policy(A_EP, [])
    dp.bump_policy_revision()
    assert run_from(dp, data) == TC_ACT_SHOT
    dp.set_policy(A_EP, [Rule(EGR, B_ID, IPPROTO_TCP, 0, 0, cookie=63)])  # another rule allows it
    dp.bump_policy_revision()
    packets = dp.ct_get(key).packets  # type: ignore[union-attr]
    assert run_from(dp, data) == TC_ACT_OK
    ct = dp.ct_get(key)
    assert ct is not None and ct.packets == packets + 1
    assert (ct.policy_rev, ct.cookie) == (2, 63)  # judged at revision 2 by the new rule
    assert run_from(dp, data) == TC_ACT_OK
    # Judged once per revision: passing packets after the first are not flow events.
    assert [(e.verdict, e.reason) for e in dp.events()] == [(Verdict.DROPPED, FlowReason.DEFAULT_DENY)]


def test_added_deny_drops_an_established_connection_at_ingress(dp: Datapath) -> None:
    enforce(dp, B, ingress=True)
    allow = Rule(ING, A_ID, IPPROTO_TCP, 80, 16, cookie=64)
    dp.set_policy(B_EP, [allow])
    _, data, reply = _established(dp)
    dp.set_policy(B_EP, [allow, Rule(ING, A_ID, IPPROTO_TCP, 80, 16, cookie=65, deny=True)])
    assert run_to(dp, data) == TC_ACT_OK  # written, revision not bumped yet: not judged again
    dp.bump_policy_revision()
    assert run_to(dp, data) == TC_ACT_SHOT
    [ev] = dp.events()
    assert (ev.reason, ev.cookie, ev.direction, ev.endpoint_id) == (FlowReason.EXPLICIT_DENY, 65, ING, B_EP)
    assert run_from(dp, reply) == TC_ACT_OK  # B's replies are not forward packets


def test_newly_enforced_endpoint_judges_its_untracked_connections(dp: Datapath) -> None:
    key, data, _ = _established(dp)  # admitted while A enforced nothing
    assert dp.ct_get(key).cookie == 0  # type: ignore[union-attr]
    enforce(dp, A, egress=True)
    dp.bump_policy_revision()
    assert run_from(dp, data) == TC_ACT_SHOT
    assert [e.reason for e in dp.events()] == [FlowReason.DEFAULT_DENY]
    enforce(dp, A, egress=False)
    dp.bump_policy_revision()
    assert run_from(dp, data) == TC_ACT_OK


def test_still_allowed_connection_passes_a_bump(dp: Datapath) -> None:
    enforce(dp, A, egress=True)
    dp.set_policy(A_EP, [Rule(EGR, B_ID, IPPROTO_TCP, 80, 16, cookie=66)])
    key, data, _ = _established(dp)
    dp.set_policy(A_EP, [Rule(EGR, B_ID, IPPROTO_TCP, 80, 16, cookie=66),
                         Rule(EGR, B_ID, IPPROTO_TCP, 443, 16, cookie=67)])
    dp.bump_policy_revision()
    assert run_from(dp, data) == TC_ACT_OK
    ct = dp.ct_get(key)
    assert ct is not None and (ct.policy_rev, ct.cookie) == (1, 66)
    assert dp.events() == []

