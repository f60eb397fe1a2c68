"""Enforcement in the lab: real connections through the eBPF datapath on pod veths.

The compiler is not wired here: the test writes identities (frontend=1001, api=1002,
database=1003), /32 ipcache entries, endpoints with enforcement on, and per-endpoint policy
entries itself, then checks connections and the flow events of each node's ring buffer.
"""

from __future__ import annotations

from collections.abc import Iterator
from ipaddress import IPv4Network

import pytest
from lab_helpers import lab, two_node_topology, unique

from meshctl.lab import cluster, datapath, probe, registry

pytestmark = pytest.mark.privileged

if not datapath.available():
    pytest.skip("meshctl.dataplane.node not available", allow_module_level=True)

from meshctl.dataplane.maps import from_be16, from_be32  # noqa: E402
from meshctl.dataplane.node import node_pin_dir  # noqa: E402
from meshctl.dataplane.ringbuf import RingBufferReader  # noqa: E402
from meshctl.dataplane.structs import FlowEvent, FlowReason, Verdict  # noqa: E402
from meshctl.lab.seed import seed_node  # noqa: E402
from meshctl.nodestate import (  # noqa: E402
    PROTO_TCP,
    PROTO_UDP,
    Direction,
    EndpointEntry,
    PolicyEntry,
    PolicyKey,
    ReservedIdentity,
)

NAME = unique("t-lab-pol")
IDS = {"demo/frontend": 1001, "demo/api": 1002, "demo/database": 1003}
EPS = {"demo/frontend": 11, "demo/api": 12, "demo/database": 13}
FAIL_TIMEOUT = 0.3


class Events:
    """The ring buffers of both nodes, drained on demand."""

    def __init__(self) -> None:
        self.got: list[tuple[str, FlowEvent]] = []
        self.readers = {}
        for node in ("n1", "n2"):
            self.readers[node] = RingBufferReader.from_pin(
                node_pin_dir(NAME, node) / "events", lambda ev, n=node: self.got.append((n, ev)))

    def drain(self) -> list[tuple[str, FlowEvent]]:
        for r in self.readers.values():
            r.consume()
        out, self.got = self.got, []
        return out

    def close(self) -> None:
        for r in self.readers.values():
            r.close()


@pytest.fixture(scope="module")
def pol() -> Iterator[tuple[cluster.UpResult, Events]]:
    with lab(two_node_topology(NAME), with_datapath=True) as res:
        assert res.datapath
        reg = res.registry
        ipcache = {IPv4Network(f"{p.ip}/32"): IDS[k] for k, p in reg.pods.items()}
        for node in ("n1", "n2"):
            local = {k: p for k, p in reg.pods.items() if p.node == node}
            seed_node(NAME, node, ipcache=ipcache,
                      policies={EPS[k]: {} for k in local},
                      endpoints={p.address: EndpointEntry(EPS[k], IDS[k], True, True)
                                 for k, p in local.items()})
        events = Events()
        try:
            yield res, events
        finally:
            events.close()


def ip(res: cluster.UpResult, pod: str) -> str:
    return res.registry.pods[pod].ip


def allow(node: str, pod: str, *entries: PolicyKey) -> None:
    """Replace pod's whole policy with allow entries (cookie = 100 + position)."""
    policy = {k: PolicyEntry(cookie=100 + i) for i, k in enumerate(entries)}
    seed_node(NAME, node, policies={EPS[pod]: policy})


def flows(events: list[tuple[str, FlowEvent]], src: str, dst: str, dport: int | None = None
          ) -> list[tuple[str, FlowEvent]]:
    return [(n, e) for n, e in events
            if str(from_be32(e.saddr_be)) == src and str(from_be32(e.daddr_be)) == dst
            and (dport is None or from_be16(e.dport_be) == dport)]


def test_steps_default_deny_then_allow_then_cross_node(pol: tuple[cluster.UpResult, Events]) -> None:
    res, ev = pol
    fe, api, db = ip(res, "demo/frontend"), ip(res, "demo/api"), ip(res, "demo/database")
    ev.drain()

    # 1. empty policy, enforcement on: default deny at frontend's egress, with an event
    r = probe.connect(NAME, "demo/frontend", api, 3000, timeout=FAIL_TIMEOUT)
    assert not r.ok and r.error == "timed out"
    got = flows(ev.drain(), fe, api, 3000)
    assert got, "no flow event for the dropped connection"
    node, e = got[0]
    assert node == "n1"
    assert (e.verdict, e.reason, e.direction) == (Verdict.DROPPED, FlowReason.DEFAULT_DENY, Direction.EGRESS)
    assert (e.src_identity, e.dst_identity, e.protocol) == (1001, 1002, PROTO_TCP)

    # 2. allow frontend -> api:3000 (frontend egress + api ingress): connects, FORWARDED events
    allow("n1", "demo/frontend", PolicyKey(Direction.EGRESS, 1002, PROTO_TCP, 3000, 16),
          PolicyKey(Direction.EGRESS, ReservedIdentity.ANY, PROTO_TCP, 5432, 16))
    allow("n1", "demo/api", PolicyKey(Direction.INGRESS, 1001, PROTO_TCP, 3000, 16),
          PolicyKey(Direction.EGRESS, 1003, PROTO_TCP, 5432, 16))
    allow("n2", "demo/database", PolicyKey(Direction.INGRESS, 1002, PROTO_TCP, 5432, 16))
    r = probe.connect(NAME, "demo/frontend", api, 3000)
    assert r.ok and r.reply == "demo/api:3000", r.error
    got = flows(ev.drain(), fe, api, 3000)
    fwd = {(e.direction, e.reason) for _, e in got if e.verdict == Verdict.FORWARDED}
    assert fwd == {(Direction.EGRESS, FlowReason.ALLOWED), (Direction.INGRESS, FlowReason.ALLOWED)}
    assert not [e for _, e in got if e.verdict == Verdict.DROPPED]

    # 3. api -> database:5432 is allowed across nodes; frontend -> database:5432 passes
    # frontend's egress (any peer on 5432) but is dropped at database's ingress on n2
    r = probe.connect(NAME, "demo/api", db, 5432)
    assert r.ok and r.reply == "demo/database:5432", r.error
    r = probe.connect(NAME, "demo/frontend", db, 5432, timeout=FAIL_TIMEOUT)
    assert not r.ok
    events = ev.drain()
    ok_ingress = [(n, e) for n, e in flows(events, api, db, 5432)
                  if e.verdict == Verdict.FORWARDED and e.direction == Direction.INGRESS]
    assert ok_ingress and ok_ingress[0][0] == "n2" and ok_ingress[0][1].src_identity == 1002
    drops = [(n, e) for n, e in flows(events, fe, db, 5432) if e.verdict == Verdict.DROPPED]
    assert drops, "no drop event for frontend -> database"
    node, e = drops[0]
    assert node == "n2" and e.direction == Direction.INGRESS and e.reason == FlowReason.DEFAULT_DENY
    assert (e.src_identity, e.dst_identity) == (1001, 1003)  # identity from n2's ipcache


def test_udp_replies_pass_unsolicited_reverse_drops(pol: tuple[cluster.UpResult, Events]) -> None:
    res, ev = pol
    fe, api = ip(res, "demo/frontend"), ip(res, "demo/api")
    allow("n1", "demo/frontend", PolicyKey(Direction.EGRESS, 1002, PROTO_UDP, 53, 16))
    # api may send UDP to frontend, but frontend admits no UDP: only replies can reach it
    allow("n1", "demo/api", PolicyKey(Direction.INGRESS, 1001, PROTO_UDP, 53, 16),
          PolicyKey(Direction.EGRESS, 1001, PROTO_UDP, 0, 0))
    ev.drain()
    r = probe.connect(NAME, "demo/frontend", api, 53, "UDP")
    assert r.ok and r.reply.startswith("demo/api:53 "), r.error
    events = ev.drain()
    assert not [e for _, e in events if e.verdict == Verdict.DROPPED]
    assert flows(events, fe, api, 53)

    r = probe.udp_unsolicited(NAME, "demo/api", "demo/frontend", 40053, timeout=FAIL_TIMEOUT)
    assert not r.ok
    drops = [e for _, e in flows(ev.drain(), api, fe, 40053) if e.verdict == Verdict.DROPPED]
    assert drops and drops[0].direction == Direction.INGRESS and drops[0].protocol == PROTO_UDP
    assert drops[0].reason == FlowReason.DEFAULT_DENY


def test_lab_up_again_keeps_datapath_and_entries(pol: tuple[cluster.UpResult, Events]) -> None:
    res, _ = pol
    again = cluster.up(two_node_topology(NAME), with_datapath=True)
    assert again.created_pods == [] and again.datapath
    assert registry.pod_ips(NAME) == {k: p.address for k, p in res.registry.pods.items()}
    allow("n1", "demo/api", PolicyKey(Direction.INGRESS, 1001, PROTO_TCP, 3000, 16))
    allow("n1", "demo/frontend", PolicyKey(Direction.EGRESS, 1002, PROTO_TCP, 3000, 16))
    assert probe.connect(NAME, "demo/frontend", ip(res, "demo/api"), 3000).ok
