"""Differential test: the kernel datapath against its emulator, meshctl.verdicts.

Why: the conformance verdicts and the compiler's property test go through the emulator of
bpf/lib/policy.h (verdicts.py); only a few dozen hand-written packets checked the C code itself.
Here hypothesis draws random inventories and policies (NetworkPolicy, CiliumNetworkPolicy and
CiliumClusterwideNetworkPolicy with deny sections, ports, ranges, named ports, CIDRs with
exceptions, entities, ICMP), the compiler turns them into each node's NodeState, the production
encoders (meshctl.dataplane.maps) write that state into the real bpf/build/datapath.o, and
thousands of random packets (TCP, UDP, SCTP, ICMP, non-first fragments, GRE, some with IPv4
options; random or aimed at the policy entries) go through from_pod and to_pod with
BPF_PROG_TEST_RUN. The kernel's verdict, reason, cookie, identities and endpoint for every packet
must equal the emulator's: any difference is a bug in one of them.

The connection test follows Cilium across policy changes: every packet that is not a reply is
checked against the current policy, replies of tracked connections pass, and a deny leaves the
conntrack entry in place (cilium/cilium#2700, #3605, #9187).

Staged policies (audit mode): about one drawn policy in four is staged. The kernel must forward
exactly as the cluster compiled WITHOUT the staged policies decides, and report one AUDIT event
exactly when the cluster compiled with them ENFORCED decides otherwise (with that verdict's reason
and cookie); the emulator's staged_verdict/audit_event must say the same.
"""

from __future__ import annotations

import os
import random
import struct
import sys
import time
from collections import Counter
from collections.abc import Iterator
from dataclasses import dataclass, field, replace
from ipaddress import IPv4Address, IPv4Network
from pathlib import Path
from typing import Any

import pytest
from datapath_harness import TC_ACT_OK, TC_ACT_SHOT, Datapath, build_object
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "unit" / "compile"))
import test_reference_property as gen  # the compiler property test's policy and pod strategies

from meshctl.compile import EndpointTable, IdentityTable, compile_spec
from meshctl.compile.documents import Document, as_document
from meshctl.compile.spec import ClusterSpec, PodSpec
from meshctl.dataplane import frames
from meshctl.dataplane.maps import ConfigMap, EndpointsMap, IpcacheMap, PolicyMaps, from_be16, from_be32
from meshctl.dataplane.ringbuf import RingBufferReader
from meshctl.dataplane.structs import CtKey, CtValue, FlowEvent, FlowReason
from meshctl.dataplane.structs import Verdict as EventVerdict
from meshctl.nodestate import (
    PROTO_ICMP,
    PROTO_SCTP,
    PROTO_TCP,
    PROTO_UDP,
    Direction,
    NodeState,
    ReservedIdentity,
)
from meshctl.verdicts import (
    Verdict,
    audit_event,
    connection_verdict,
    ipcache_lookup,
    policy_verdict,
    staged_verdict,
)

pytestmark = pytest.mark.privileged

FROM_POD, TO_POD = "from_pod", "to_pod"
HOOK_DIRECTION = {FROM_POD: Direction.EGRESS, TO_POD: Direction.INGRESS}
REASON_NAMES = {
    FlowReason.ALLOWED: "allowed",
    FlowReason.NOT_ENFORCED: "not-enforced",
    FlowReason.DEFAULT_DENY: "default-deny",
    FlowReason.EXPLICIT_DENY: "explicit-deny",
    FlowReason.NO_ENDPOINT: "no-endpoint",
}
PROTO_GRE = 47  # a protocol without ports: only any-protocol entries can match it
ICMP_TYPES = (0, 3, 5, 8, 11, 13)  # echo reply, unreachable, redirect, echo, time exceeded, timestamp
ICMP_ECHO_TYPES = (frames.ICMP_ECHO, frames.ICMP_ECHOREPLY)
EPHEMERAL = 32768  # source ports (and echo ids) count up from here; destination ports stay below,
# so no packet is ever the reply, or a later packet, of another connection by accident

CtTuple = tuple[IPv4Address, IPv4Address, int, int, int, int]  # saddr daddr sport dport proto direction

# MESHCTL_DIFFERENTIAL_SCALE=N runs N times as many universes (a longer hunt for differences).
SCALE = max(1, int(os.environ.get("MESHCTL_DIFFERENTIAL_SCALE", "1")))
FIRST_PACKET_EXAMPLES = 150 * SCALE
RUNS_PER_EXAMPLE = 80  # random hook runs (packets through from_pod or to_pod) per drawn universe
AIMED_PER_NODE = 30  # and packets aimed at the policy entries of each node
CONNECTION_EXAMPLES = 40 * SCALE
CONNECTIONS_PER_EXAMPLE = 40
MIN_PACKETS = 10_000


def _near(cidr: str) -> list[IPv4Address]:
    """Addresses on and just beyond the edges of a prefix, and one inside it."""
    net = IPv4Network(cidr)
    first, last = int(net.network_address), int(net.broadcast_address)
    picks = {first, last, (first + last) // 2, max(first - 1, 0), min(last + 1, 2**32 - 1)}
    return [IPv4Address(a) for a in sorted(picks)]


# Every address a packet may use that is not a pod: the property test's world addresses, the
# edges of its CIDRs and exceptions, and unassigned addresses next to the pods (10.0.0.0/8).
OTHERS = tuple(sorted({*gen.EXTERNAL, *(a for c in (*gen.CIDRS, *gen.EXCEPTS) for a in _near(c)),
                       IPv4Address("10.0.0.7"), IPv4Address("10.0.0.200"), IPv4Address("10.0.1.1")}))

# A clusterwide deny of everything: the second policy set is this one now and then, so every
# connection opened under the first set is revoked.
LOCKDOWN = {
    "kind": "CiliumClusterwideNetworkPolicy",
    "metadata": {"name": "lockdown"},
    "spec": {
        "endpointSelector": {},
        "ingressDeny": [{"fromEntities": ["all"]}],
        "egressDeny": [{"toEntities": ["all"]}],
    },
}


# ---------------------------------------------------------------- universes


def _l4_only(rule: dict[str, Any]) -> dict[str, Any]:
    """The rule without HTTP rules: their connections go to a proxy the harness does not run
    (test_l7_http covers them); this test compares L3/L4 verdicts."""
    for tp in rule.get("toPorts") or ():
        tp.pop("rules", None)
    return rule


@st.composite
def cilium_policy_with_icmp(draw: st.DrawFn, i: int, clusterwide: bool) -> dict[str, Any]:
    """The property test's Cilium policy (L3/L4 only), with an `icmps` section on some rules."""
    doc = draw(gen.cilium_policy(i, clusterwide))
    for spec in doc.get("specs") or [doc["spec"]]:
        for section in ("ingress", "egress", "ingressDeny", "egressDeny"):
            for rule in map(_l4_only, spec.get(section) or ()):
                if draw(st.integers(0, 4)) == 0:
                    rule["icmps"] = [{"fields": [{"type": 8, "family": "IPv4"}]}]
    return doc


@st.composite
def wide_policy(draw: st.DrawFn) -> dict[str, Any]:
    """Allow rules for every endpoint of the cluster: most pods of most universes enforce and
    meet allow entries, not only the few a random selector picks."""
    spec: dict[str, Any] = {"endpointSelector": {}}
    for direction in (Direction.INGRESS, Direction.EGRESS):
        rules = [_l4_only(r) for r in draw(st.lists(gen.cilium_rule(direction, False), max_size=3))]
        if rules or draw(st.booleans()):
            spec[direction.label] = rules or [{}]
    return {"kind": "CiliumClusterwideNetworkPolicy", "metadata": {"name": "wide"}, "spec": spec}


@st.composite
def policy_sets(draw: st.DrawFn) -> tuple[Document, ...]:
    docs = []
    for i in range(draw(st.integers(0, 5))):
        kind = draw(st.sampled_from(("np", "cnp", "ccnp")))
        policy = gen.k8s_policy(i) if kind == "np" else cilium_policy_with_icmp(i, kind == "ccnp")
        docs.append(draw(policy))
    if draw(st.integers(0, 2)) == 0:
        docs.append(draw(wide_policy()))
    return tuple(replace(as_document(d), staged=draw(st.integers(0, 3)) == 0) for d in docs)


@st.composite
def relabelled(draw: st.DrawFn, pod: PodSpec) -> PodSpec:
    """The same pod (name, node, address) with new labels now and then."""
    if draw(st.booleans()):
        return pod
    app = draw(st.one_of(st.none(), st.sampled_from(gen.APPS)))
    return replace(pod, labels={"app": app} if app else {})


@dataclass(frozen=True)
class Universe:
    """One or more revisions of a cluster (policy sets, pod labels) over the same pods, and
    the seed of its packets."""

    revisions: tuple[ClusterSpec, ...]
    seed: int

    @property
    def pods(self) -> tuple[PodSpec, ...]:
        return self.revisions[0].pods


@st.composite
def universes(draw: st.DrawFn, revisions: int = 1) -> Universe:
    namespaces = tuple(gen.NAMESPACES[: draw(st.integers(1, 3))])
    ns_table = {n: draw(gen.ns_labels()) for n in namespaces}
    pods = draw(gen.pods(namespaces))
    mode = draw(st.sampled_from(("default", "default", "default", "always", "never")))
    specs = []
    for r in range(revisions):
        if r and draw(st.integers(0, 2)) == 0:
            policies: tuple[Document, ...] = (as_document(LOCKDOWN),)
        else:
            policies = draw(policy_sets())
        if r and draw(st.integers(0, 2)) == 0:
            pods = tuple(draw(relabelled(p)) for p in pods)  # identities change under live connections
        specs.append(ClusterSpec("diff", gen.NODES, ns_table, pods, policies, mode))
    return Universe(tuple(specs), draw(st.integers(0, 2**32 - 1)))


@dataclass(frozen=True)
class Views:
    """One node of one revision: the state loaded (staged policies in audit maps), and the same
    cluster compiled without the staged policies and with them enforced: what the kernel must
    forward by, and what its AUDIT events must report when it differs."""

    state: NodeState
    enforced: NodeState
    everything: NodeState


def compile_revisions(universe: Universe) -> list[dict[str, Views]]:
    """Each revision's node views, compiled with the identity and endpoint tables the previous
    revision left (as the state directory does), so pods keep their identity and endpoint id."""
    identities, endpoint_ids = IdentityTable(), EndpointTable()
    out = []
    for spec in universe.revisions:
        compiled = compile_spec(spec, identities, endpoint_ids, "diff")
        enforced = replace(spec, policies=tuple(d for d in spec.policies if not d.staged))
        everything = replace(spec, policies=tuple(replace(d, staged=False) for d in spec.policies))
        without = compile_spec(enforced, identities, endpoint_ids, "diff").nodes
        with_all = compile_spec(everything, identities, endpoint_ids, "diff").nodes
        identities, endpoint_ids = compiled.identities, compiled.endpoint_ids
        out.append({n: Views(s, without[n], with_all[n]) for n, s in compiled.nodes.items()})
    return out


# ---------------------------------------------------------------- packets


@dataclass(frozen=True)
class Packet:
    """One IPv4 packet. sport is the echo id for ICMP echo; a fragment is a non-first one."""

    src: IPv4Address
    dst: IPv4Address
    protocol: int
    sport: int = 0
    dport: int = 0
    icmp_type: int = 0
    tcp_flags: int = frames.TCP_SYN
    fragment: bool = False
    ip_options: bool = False  # a 24-byte IPv4 header: the ports sit 4 bytes further

    @property
    def has_ports(self) -> bool:
        if self.fragment:
            return False
        if self.protocol == PROTO_ICMP:
            return self.icmp_type in ICMP_ECHO_TYPES
        return self.protocol in (PROTO_TCP, PROTO_UDP, PROTO_SCTP)

    @property
    def ct_ports(self) -> tuple[int, int]:
        """The ports conntrack and the flow event see (parse.h)."""
        if not self.has_ports:
            return (0, 0)
        if self.protocol == PROTO_ICMP:
            return (self.sport, self.sport)
        return (self.sport, self.dport)

    @property
    def policy_port(self) -> int:
        """The port of the policy lookup: the ICMP type for ICMP (as Cilium), none in a fragment."""
        if self.fragment:
            return 0
        if self.protocol == PROTO_ICMP:
            return self.icmp_type
        return self.dport if self.protocol in (PROTO_TCP, PROTO_UDP, PROTO_SCTP) else 0

    def frame(self) -> bytes:
        frame = self._frame()
        return with_ip_options(frame) if self.ip_options else frame

    def _frame(self) -> bytes:
        src, dst = str(self.src), str(self.dst)
        if self.fragment:
            ip = frames.ipv4_packet(src, dst, self.protocol, b"\x00" * 16, frag=0x0040)
            return frames.ethernet(ip, frames.ETH_P_IP)
        if self.protocol == PROTO_TCP:
            return frames.tcp_frame(src, dst, self.sport, self.dport, self.tcp_flags)
        if self.protocol == PROTO_UDP:
            return frames.udp_frame(src, dst, self.sport, self.dport)
        if self.protocol == PROTO_ICMP:
            if self.icmp_type in ICMP_ECHO_TYPES:
                reply = self.icmp_type == frames.ICMP_ECHOREPLY
                return frames.icmp_echo_frame(src, dst, self.sport, reply=reply)
            return frames.icmp_frame(src, dst, self.icmp_type)
        if self.protocol == PROTO_SCTP:
            l4 = struct.pack("!HHII", self.sport, self.dport, 1, 0)  # common header: ports, tag, crc
        else:
            l4 = b"\x00\x00\x08\x00"  # a GRE header
        return frames.ethernet(frames.ipv4_packet(src, dst, self.protocol, l4), frames.ETH_P_IP)

    def forward(self) -> Packet:
        """A later packet of the same connection in the same direction."""
        if self.protocol == PROTO_TCP:
            return Packet(self.src, self.dst, PROTO_TCP, self.sport, self.dport, tcp_flags=frames.TCP_ACK)
        return self

    def reply(self) -> Packet:
        if self.protocol == PROTO_ICMP:
            return Packet(self.dst, self.src, PROTO_ICMP, self.sport, icmp_type=frames.ICMP_ECHOREPLY)
        flags = frames.TCP_SYN | frames.TCP_ACK if self.protocol == PROTO_TCP else 0
        return Packet(self.dst, self.src, self.protocol, self.dport, self.sport, tcp_flags=flags)

    def __str__(self) -> str:
        if self.protocol == PROTO_ICMP:
            what = f"icmp type {self.icmp_type}" + (f" id {self.sport}" if self.has_ports else "")
        elif self.protocol in (PROTO_TCP, PROTO_UDP, PROTO_SCTP):
            name = {PROTO_TCP: "tcp", PROTO_UDP: "udp", PROTO_SCTP: "sctp"}[self.protocol]
            what = f"{name} {self.sport}->{self.dport}"
            if self.protocol == PROTO_TCP:
                what += f" flags {self.tcp_flags:#x}"
        else:
            what = f"proto {self.protocol}"
        return (f"{self.src} -> {self.dst} {what}" + (" (non-first fragment)" if self.fragment else "")
                + (" (IP options)" if self.ip_options else ""))


def with_ip_options(frame: bytes) -> bytes:
    """The frame with four bytes of IPv4 options (NOP, NOP, NOP, end) after the fixed header."""
    eth, ip, rest = frame[:14], frame[14:34], frame[34:]
    total = struct.unpack("!H", ip[2:4])[0] + 4
    hdr = bytes([0x46, ip[1]]) + struct.pack("!H", total) + ip[4:10] + b"\0\0" + ip[12:] + b"\x01\x01\x01\x00"
    hdr = hdr[:10] + struct.pack("!H", frames.checksum(hdr)) + hdr[12:]
    return eth + hdr + rest


class PacketMaker:
    """Random packets of one universe from a seeded generator (cheap to draw thousands)."""

    def __init__(self, universe: Universe) -> None:
        self.rng = random.Random(universe.seed)
        self.pod_ips = [p.ip for p in universe.pods if p.ip is not None]
        named = [port for p in universe.pods for _, port, _ in p.ports]
        self.ports = [*gen.PORTS, *named, *(p + d for p in gen.PORTS for d in (-1, 1))]
        self.next_port = EPHEMERAL

    def address(self) -> IPv4Address:
        rng = self.rng
        return rng.choice(self.pod_ips) if rng.random() < 0.6 else rng.choice(OTHERS)

    def fresh_port(self) -> int:
        self.next_port += 1
        assert self.next_port < 65536, "too many packets for unique source ports"
        return self.next_port

    def dport(self) -> int:
        rng = self.rng
        roll = rng.random()
        if roll < 0.7:
            return rng.choice(self.ports)
        if roll < 0.72:
            return 0
        return rng.randrange(1, EPHEMERAL)

    def packet(self, src: IPv4Address, dst: IPv4Address, connection: bool = False) -> Packet:
        """A first packet; `connection`: only kinds that have a reply (ports or echo ids)."""
        rng = self.rng
        kinds = ("tcp", "udp", "sctp", "echo") if connection else (
            "tcp", "tcp", "tcp", "udp", "udp", "sctp", "echo", "icmp", "fragment", "gre")
        kind = rng.choice(kinds)
        if src == dst and kind in ("echo", "icmp"):
            kind = "udp"  # an echo to itself has the same tuple both ways: conntrack sees its own reply
        if kind == "tcp":  # a connection opens with a SYN (a FIN or RST would shorten its lifetime)
            flags = frames.TCP_SYN if connection else rng.choice(
                (frames.TCP_SYN,) * 4 + (frames.TCP_ACK, frames.TCP_FIN | frames.TCP_ACK, frames.TCP_RST))
            return Packet(src, dst, PROTO_TCP, self.fresh_port(), self.dport(), tcp_flags=flags,
                          ip_options=rng.random() < 0.1)
        if kind in ("udp", "sctp"):
            protocol = PROTO_UDP if kind == "udp" else PROTO_SCTP
            return Packet(src, dst, protocol, self.fresh_port(), self.dport(), ip_options=rng.random() < 0.1)
        if kind == "echo":
            return Packet(src, dst, PROTO_ICMP, self.fresh_port(), icmp_type=frames.ICMP_ECHO)
        if kind == "icmp":
            icmp_type = rng.choice(ICMP_TYPES)
            ident = self.fresh_port() if icmp_type in ICMP_ECHO_TYPES else 0
            return Packet(src, dst, PROTO_ICMP, ident, icmp_type=icmp_type)
        if kind == "fragment":
            return Packet(src, dst, rng.choice((PROTO_TCP, PROTO_UDP, PROTO_ICMP)), fragment=True)
        return Packet(src, dst, PROTO_GRE)

    def aimed(self, state: NodeState, count: int) -> list[tuple[str, Packet]]:
        """Packets that meet the node's policy entries: a peer of the entry's identity and a port
        in its range, so allows, denies and their cookies are met, not only default deny."""
        rng = self.rng
        targets = [(addr, key) for addr, ep in state.endpoints.items()
                   for key in state.policies.get(ep.endpoint_id, ())]
        if not targets:
            return []
        identity = {a: ipcache_lookup(state.ipcache, a) for a in (*self.pod_ips, *OTHERS)}
        out = []
        for _ in range(count):
            addr, key = rng.choice(targets)
            peers = [a for a, i in identity.items() if key.identity in (ReservedIdentity.ANY, i)]
            lo, hi = key.port_range or (1, EPHEMERAL - 1)
            if not peers or lo >= EPHEMERAL:
                continue
            peer = rng.choice(peers)
            src, dst = (addr, peer) if key.direction == Direction.EGRESS else (peer, addr)
            protocol = key.protocol or rng.choice((PROTO_TCP, PROTO_UDP, PROTO_SCTP, PROTO_ICMP))
            if protocol == PROTO_ICMP and src != dst:
                pkt = Packet(src, dst, PROTO_ICMP, self.fresh_port(), icmp_type=frames.ICMP_ECHO)
            else:
                protocol = PROTO_UDP if protocol == PROTO_ICMP else protocol
                pkt = Packet(src, dst, protocol, self.fresh_port(), rng.randint(lo, min(hi, EPHEMERAL - 1)))
            out.append((FROM_POD if key.direction == Direction.EGRESS else TO_POD, pkt))
        return out


# ---------------------------------------------------------------- kernel and emulator


@dataclass(frozen=True)
class Outcome:
    """A hook's decision on one packet: the verdict and what the flow event says (None: no event)."""

    verdict: Verdict
    src_identity: int | None = None
    dst_identity: int | None = None
    endpoint_id: int | None = None

    def __str__(self) -> str:
        v = self.verdict
        text = f"{'pass' if v.allowed else 'drop'} {v.reason} cookie={v.cookie}"
        if self.src_identity is not None:
            text += f" ids {self.src_identity}->{self.dst_identity} ep={self.endpoint_id}"
        return text


class Kernel:
    """The loaded datapath object, one node's state at a time, and a ring buffer reader kept
    open (opening one per packet costs milliseconds: it maps the 16 MB ring)."""

    def __init__(self, dp: Datapath) -> None:
        self.dp = dp
        self._events: list[FlowEvent] = []
        self.reader = RingBufferReader(dp.maps["events"], self._events.append)
        self.programs = {FROM_POD: dp.from_pod, TO_POD: dp.to_pod}
        self.runs = 0
        self.seen: Counter[str] = Counter()  # packets compared, by the emulator's reason

    def close(self) -> None:
        self.reader.close()

    def load(self, state: NodeState) -> None:
        """Replace the node's ipcache, endpoints, config and policy maps, then bump the policy
        revision as reconcile does last; conntrack stays."""
        ipcache, endpoints = self.dp.maps["ipcache"], self.dp.maps["endpoints"]
        ipcache.clear()
        endpoints.clear()
        IpcacheMap(ipcache).upsert(state.ipcache)
        EndpointsMap(endpoints).upsert(state.endpoints)
        ConfigMap(self.dp.maps["config"]).write(state.config)
        policies = PolicyMaps(self.dp.maps["policy_maps"])
        stale = set(policies.endpoint_ids()) - set(state.policies)
        policies.swap_many(state.policies)
        policies.remove(stale)
        self.dp.bump_policy_revision()

    @property
    def revision(self) -> int:
        return self.dp.policy_revision()

    def forget_connections(self) -> None:
        self.dp.maps["ct"].clear()

    def run(self, hook: str, pkt: Packet) -> tuple[int, list[FlowEvent]]:
        """The program's return code and the flow events it emitted for this one packet."""
        retval = self.programs[hook].test_run(pkt.frame()).retval
        self.runs += 1
        self.reader.consume()
        events, self._events[:] = list(self._events), []
        return retval, events

    def ct_entries(self) -> dict[CtTuple, tuple[int, int]]:
        """Every conntrack entry: tuple -> (cookie, policy revision it was judged at)."""
        out = {}
        for raw_key, raw_value in self.dp.maps["ct"].items():
            k, v = CtKey.from_buffer_copy(raw_key), CtValue.from_buffer_copy(raw_value)
            key = (from_be32(k.saddr_be), from_be32(k.daddr_be), from_be16(k.sport_be), from_be16(k.dport_be),
                   k.protocol, k.direction)
            out[key] = (v.cookie, v.policy_rev)
        return out

    def drop_portless_entry(self, hook: str, pkt: Packet) -> None:
        """Packets without ports all share one conntrack tuple per address pair: forget it, so
        each such packet meets the policy as a new one (as the emulator assumes)."""
        if not pkt.has_ports:
            key = Datapath.ct_key(str(pkt.src), str(pkt.dst), 0, 0, pkt.protocol, HOOK_DIRECTION[hook])
            self.dp.maps["ct"].delete(key)


def verdict_word(retval: int) -> str:
    return {TC_ACT_OK: "pass", TC_ACT_SHOT: "drop"}.get(retval, f"tc code {retval}")


def observed(retval: int, event: FlowEvent | None) -> Outcome:
    assert retval in (TC_ACT_OK, TC_ACT_SHOT), f"unexpected tc return code {retval}"
    if event is None:
        return Outcome(Verdict(retval == TC_ACT_OK, "no-event"))
    reason = REASON_NAMES.get(event.reason, f"reason {event.reason}")
    return Outcome(Verdict(retval == TC_ACT_OK, reason, event.cookie), event.src_identity,
                   event.dst_identity, event.endpoint_id)


def emulated(state: NodeState, hook: str, pkt: Packet) -> Outcome:
    """What verdicts.py says the hook decides for a packet of a new connection."""
    direction = HOOK_DIRECTION[hook]
    local, peer = (pkt.src, pkt.dst) if hook == FROM_POD else (pkt.dst, pkt.src)
    peer_identity = ipcache_lookup(state.ipcache, peer)
    verdict = policy_verdict(state, local, direction, peer_identity, pkt.protocol, pkt.policy_port)
    ep = state.endpoints.get(local)
    local_identity = ep.identity if ep is not None else ipcache_lookup(state.ipcache, local)
    ids = (local_identity, peer_identity) if hook == FROM_POD else (peer_identity, local_identity)
    return Outcome(verdict, *ids, ep.endpoint_id if ep is not None else 0)


def expected(
    views: Views, report: Report, node: str, hook: str, pkt: Packet
) -> tuple[Outcome, Outcome | None]:
    """The verdict event and the AUDIT event (None: none) a new connection must produce, from the
    enforced-only and all-enforced compiles; the emulator's own audit view must agree."""
    want = emulated(views.state, hook, pkt)
    if emulated(views.enforced, hook, pkt).verdict != want.verdict:
        report.add(node, hook, pkt, f"staged policies change the enforced verdict: {want}, without them "
                                    f"{emulated(views.enforced, hook, pkt)}")
    staged = emulated(views.everything, hook, pkt).verdict
    audit = replace(want, verdict=staged) if staged.allowed != want.verdict.allowed else None
    local, peer = (pkt.src, pkt.dst) if hook == FROM_POD else (pkt.dst, pkt.src)
    mine = audit_event(want.verdict, staged_verdict(
        views.state, local, HOOK_DIRECTION[hook], ipcache_lookup(views.state.ipcache, peer), pkt.protocol,
        pkt.policy_port))
    if mine != (audit.verdict if audit else None):
        report.add(node, hook, pkt, f"emulator audit {mine}, all-enforced compile says {audit}")
    return want, audit


def split_audit(events: list[FlowEvent]) -> tuple[list[FlowEvent], list[FlowEvent]]:
    """(verdict events, AUDIT events)."""
    audits = [e for e in events if e.verdict == EventVerdict.AUDIT]
    return [e for e in events if e.verdict != EventVerdict.AUDIT], audits


def check_audit(report: Report, node: str, hook: str, pkt: Packet, retval: int, audits: list[FlowEvent],
                want: Outcome | None) -> None:
    got = [observed(TC_ACT_OK if a.reason == FlowReason.ALLOWED else TC_ACT_SHOT, a) for a in audits]
    if got != ([want] if want else []):
        wanted = str(want) if want else "none"
        report.add(node, hook, pkt, f"AUDIT events {[str(g) for g in got]}, want {wanted} "
                                    f"(kernel {verdict_word(retval)})")
    elif not all(event_matches(e, hook, pkt) for e in audits):
        report.add(node, hook, pkt, "the AUDIT event names another packet")


def event_matches(event: FlowEvent, hook: str, pkt: Packet) -> bool:
    sport, dport = pkt.ct_ports
    return (from_be32(event.saddr_be), from_be32(event.daddr_be), from_be16(event.sport_be),
            from_be16(event.dport_be), event.protocol, event.direction) == (
        pkt.src, pkt.dst, sport, dport, pkt.protocol, int(HOOK_DIRECTION[hook]))


@dataclass
class Report:
    """Differences found in one universe, described for the failure message."""

    universe: Universe
    lines: list[str] = field(default_factory=list)

    def add(self, node: str, hook: str, pkt: Packet, note: str) -> None:
        self.lines.append(f"{node} {hook}: {pkt}: {note}")

    def note(self, line: str) -> None:
        self.lines.append(line)

    def check(self) -> None:
        if not self.lines:
            return
        spec = self.universe.revisions[0]
        pods = "\n".join(f"  {p.key} {p.ip} node={p.node} labels={dict(p.labels)} ports={p.ports}"
                         for p in spec.pods)
        revs = "\n".join(
            f"  revision {i}:\n" + "\n".join(f"    {d.body!r}" for d in s.policies)
            + "".join(f"\n    relabelled {p.key}: {dict(p.labels)}"
                      for p, before in zip(s.pods, spec.pods, strict=True) if p.labels != before.labels)
            for i, s in enumerate(self.universe.revisions))
        shown = "\n".join(self.lines[:12])
        more = f"\n... and {len(self.lines) - 12} more" if len(self.lines) > 12 else ""
        pytest.fail(f"{len(self.lines)} differences between kernel and emulator (mode={spec.mode}, "
                    f"packet seed {self.universe.seed}):\n"
                    f"{shown}{more}\npods:\n{pods}\npolicies:\n{revs}", pytrace=False)


def check_new(kernel: Kernel, report: Report, node: str, views: Views, hook: str, pkt: Packet) -> None:
    """Run a packet the datapath has not seen the connection of; compare everything with the
    emulator."""
    retval, events = kernel.run(hook, pkt)
    want, audit = expected(views, report, node, hook, pkt)
    events, audits = split_audit(events)
    check_audit(report, node, hook, pkt, retval, audits, audit)
    kernel.seen[want.verdict.reason] += 1
    kernel.seen["audit"] += bool(audit)
    if len(events) != 1:
        report.add(node, hook, pkt, f"kernel {verdict_word(retval)} with {len(events)} flow events, "
                                    f"want 1 (emulator: {want})")
        return
    got = observed(retval, events[0])
    if not event_matches(events[0], hook, pkt):
        report.add(node, hook, pkt, "the flow event names another packet")
    if got != want:
        report.add(node, hook, pkt, f"kernel {got}, emulator {want}")


# ---------------------------------------------------------------- fixtures


@pytest.fixture(scope="module")
def kernel() -> Iterator[Kernel]:
    dp = Datapath(build_object())
    k = Kernel(dp)
    dp.reset()
    try:
        yield k
    finally:
        dp.reset()
        k.close()
        dp.close()


def node_of(universe: Universe, addr: IPv4Address) -> str | None:
    for pod in universe.pods:
        if pod.ip == addr:
            return pod.node
    return None


# ---------------------------------------------------------------- first packets


def test_first_packets_match_emulator(kernel: Kernel, capsys: pytest.CaptureFixture[str]) -> None:
    """Packets of new connections: the kernel's verdict, reason, cookie, identities and endpoint
    equal the emulator's, through from_pod at the source's node and to_pod at the destination's
    (and at a node where the address is no endpoint)."""
    start_runs, started = kernel.runs, time.perf_counter()

    @settings(max_examples=FIRST_PACKET_EXAMPLES, deadline=None,
              suppress_health_check=[HealthCheck.too_slow, HealthCheck.data_too_large])
    @given(universes())
    def run(universe: Universe) -> None:
        [nodes] = compile_revisions(universe)
        maker = PacketMaker(universe)
        work: dict[str, list[tuple[str, Packet]]] = {n: [] for n in nodes}
        runs = 0
        while runs < RUNS_PER_EXAMPLE:
            pkt = maker.packet(maker.address(), maker.address())
            for hook, addr in ((FROM_POD, pkt.src), (TO_POD, pkt.dst)):
                node = node_of(universe, addr)
                if node is None and maker.rng.random() < 0.25:
                    node = maker.rng.choice(gen.NODES)  # not an endpoint there: no-endpoint drop
                if node is not None:
                    work[node].append((hook, pkt))
                    runs += 1
        for node, views in nodes.items():
            work[node] += maker.aimed(views.state, AIMED_PER_NODE)
        report = Report(universe)
        for node, todo in work.items():
            if not todo:
                continue
            views = nodes[node]
            state = views.state
            kernel.forget_connections()
            kernel.load(state)
            for hook, pkt in todo:
                check_new(kernel, report, node, views, hook, pkt)
                kernel.drop_portless_entry(hook, pkt)
                local = pkt.src if hook == FROM_POD else pkt.dst
                if local in state.endpoints:  # the plan's entry point agrees with the node's view
                    states = {n: v.state for n, v in nodes.items()}
                    cv = connection_verdict(states, pkt.src, pkt.dst, pkt.protocol, pkt.policy_port)
                    mine = emulated(state, hook, pkt).verdict
                    if (cv.egress if hook == FROM_POD else cv.ingress) != mine:
                        report.add(node, hook, pkt, f"connection_verdict {cv} differs from the node's {mine}")
        report.check()

    kernel.seen.clear()
    run()
    packets = kernel.runs - start_runs
    with capsys.disabled():
        print(f"\ndifferential first packets: {packets} packets in {FIRST_PACKET_EXAMPLES} universes, "
              f"{time.perf_counter() - started:.1f} s; by emulator reason: {dict(kernel.seen)}")
    assert packets >= MIN_PACKETS


# ---------------------------------------------------------------- connections across policy changes


@dataclass
class Tracked:
    cookie: int
    rev: int  # policy revision the forward direction was last judged at


class Conntrack:
    """What the node's ct map must hold under Cilium's semantics: an entry per connection a hook
    admitted (tuple and direction as conntrack.h keys them), refreshed by every forward packet the
    current policy admits, and left alone by a deny."""

    def __init__(self, rev: int) -> None:
        self.entries: dict[CtTuple, Tracked] = {}
        self.rev = rev

    @staticmethod
    def key(pkt: Packet, hook: str, reverse: bool = False) -> CtTuple:
        sport, dport = pkt.ct_ports
        direction = int(HOOK_DIRECTION[hook])
        if reverse:
            return (pkt.dst, pkt.src, dport, sport, pkt.protocol, 1 - direction)
        return (pkt.src, pkt.dst, sport, dport, pkt.protocol, direction)


def check_tracked(kernel: Kernel, ct: Conntrack, report: Report, node: str, views: Views, hook: str,
                  pkt: Packet) -> None:
    """One packet of a possibly tracked connection: a reply passes; a forward packet judged at an
    older revision (or untracked) gets the emulator's verdict under the current policy."""
    key = ct.key(pkt, hook)
    fwd = ct.entries.get(key)
    if fwd is None and ct.key(pkt, hook, reverse=True) in ct.entries:
        retval, events = kernel.run(hook, pkt)
        kernel.seen["reply"] += 1
        if retval != TC_ACT_OK or any(e.verdict != EventVerdict.FORWARDED for e in events):
            report.add(node, hook, pkt, f"reply of a tracked connection: kernel {verdict_word(retval)}, "
                                        f"events {[str(observed(retval, e)) for e in events]}, want pass")
        return
    if fwd is not None and fwd.rev == ct.rev:
        retval, _ = kernel.run(hook, pkt)
        kernel.seen["established, judged"] += 1
        if retval != TC_ACT_OK:
            report.add(node, hook, pkt, "forward packet judged at this revision already: dropped, want pass")
        return
    if fwd is None:
        want = emulated(views.state, hook, pkt)
        check_new(kernel, report, node, views, hook, pkt)
    else:
        retval, events = kernel.run(hook, pkt)
        want, audit = expected(views, report, node, hook, pkt)
        events, audits = split_audit(events)
        check_audit(report, node, hook, pkt, retval, audits, audit)  # judged again: audited again
        kernel.seen["established, audit"] += bool(audit)
        kernel.seen[f"established, {want.verdict.reason}"] += 1
        got = [observed(retval, e) for e in events]
        if want.verdict.allowed:
            # passes silently (the connection was reported when it began) or with its verdict
            if retval != TC_ACT_OK or any(g != want for g in got):
                report.add(node, hook, pkt, f"established: kernel {verdict_word(retval)}, events "
                                            f"{[str(g) for g in got]}, emulator {want}")
        elif len(got) != 1 or got[0] != want:
            report.add(node, hook, pkt, f"established: kernel {verdict_word(retval)}, events "
                                        f"{[str(g) for g in got]}, want one event {want}")
        elif not all(event_matches(e, hook, pkt) for e in events):
            report.add(node, hook, pkt, "the flow event names another packet")
    if want.verdict.allowed:
        ct.entries[key] = Tracked(want.verdict.cookie, ct.rev)


def check_conntrack(kernel: Kernel, ct: Conntrack, report: Report, node: str, phase: str) -> None:
    """Every admitted connection is still tracked (a deny deletes nothing) with the cookie and
    revision of its last admission, and nothing else is."""
    got = kernel.ct_entries()
    want = {k: (t.cookie, t.rev) for k, t in ct.entries.items()}
    for k in sorted(want.keys() | got.keys(), key=str):
        if got.get(k) != want.get(k):
            report.note(f"{node} after {phase}: ct entry {k}: kernel (cookie, rev) {got.get(k)}, "
                        f"want {want.get(k)}")


def test_policy_changes_recheck_forward_packets_and_keep_replies(
        kernel: Kernel, capsys: pytest.CaptureFixture[str]) -> None:
    """Connections opened under one revision, then the policy changes (a second random set,
    often a lockdown, sometimes with pods relabelled) and back: forward packets get the
    emulator's verdict under the revision in force, replies of connections a hook admitted pass,
    and the ct map keeps every entry with the cookie and revision of its last admission."""
    start_runs, started = kernel.runs, time.perf_counter()

    @settings(max_examples=CONNECTION_EXAMPLES, deadline=None,
              suppress_health_check=[HealthCheck.too_slow, HealthCheck.data_too_large])
    @given(universes(revisions=2))
    def run(universe: Universe) -> None:
        states = compile_revisions(universe)
        maker = PacketMaker(universe)
        connections = []
        for _ in range(CONNECTIONS_PER_EXAMPLE):
            src, dst = maker.address(), maker.address()
            if node_of(universe, src) is None and node_of(universe, dst) is None:
                dst = maker.rng.choice(maker.pod_ips)
            connections.append(maker.packet(src, dst, connection=True))
        for node in gen.NODES:  # and connections the first policy set has entries for
            connections += [pkt for _, pkt in maker.aimed(states[0][node].state, AIMED_PER_NODE // 2)]
        report = Report(universe)
        for node in gen.NODES:

            def hooks(pkt: Packet, node: str = node) -> list[str]:
                ends = ((FROM_POD, pkt.src), (TO_POD, pkt.dst))
                return [h for h, addr in ends if node_of(universe, addr) == node]

            mine = [c for c in connections if hooks(c) or hooks(c.reply())]
            if not mine:
                continue
            kernel.forget_connections()
            kernel.load(states[0][node].state)
            ct = Conntrack(kernel.revision)
            for c in mine:
                for hook in hooks(c):
                    check_tracked(kernel, ct, report, node, states[0][node], hook, c)
            check_conntrack(kernel, ct, report, node, "opening connections")
            for revision, phase in ((1, "the policy change"), (0, "the policy change back")):
                state = states[revision][node]
                kernel.load(state.state)
                ct.rev = kernel.revision
                for c in mine:
                    for hook in hooks(c.forward()):
                        check_tracked(kernel, ct, report, node, state, hook, c.forward())
                    for hook in hooks(c.reply()):
                        check_tracked(kernel, ct, report, node, state, hook, c.reply())
                check_conntrack(kernel, ct, report, node, phase)
        report.check()

    kernel.seen.clear()
    run()
    packets = kernel.runs - start_runs
    with capsys.disabled():
        print(f"\ndifferential connections: {packets} packets in {CONNECTION_EXAMPLES} universes, "
              f"{time.perf_counter() - started:.1f} s; by kind: {dict(kernel.seen)}")
    assert packets >= MIN_PACKETS // 2
