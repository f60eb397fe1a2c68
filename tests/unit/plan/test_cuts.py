"""meshctl.plan.cuts: which live connections a plan cuts, and which changes are to blame."""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import replace
from ipaddress import IPv4Address as A
from ipaddress import IPv4Network as N

from meshctl.catalog import Catalog, IdentityInfo
from meshctl.connections import TrackedConnection
from meshctl.nodestate import (
    PROTO_ICMP,
    PROTO_TCP,
    Attachment,
    DatapathConfig,
    Direction,
    EndpointEntry,
    FrozenMap,
    IpcacheEntry,
    NodeState,
    PolicyEntry,
    PolicyKey,
)
from meshctl.plan import build_plan
from meshctl.plan.cuts import established_cuts, nodes_to_read
from meshctl.plan.diff import diff_node
from meshctl.plan.model import CutRow

ING, EGR = Direction.INGRESS, Direction.EGRESS
WEB, DB, OTHER = A("10.1.0.10"), A("10.1.0.20"), A("10.2.0.30")
WEB_ID, DB_ID, OTHER_ID = 300, 301, 302
DB_EP = 20
ALLOW_WEB = PolicyKey(ING, WEB_ID, PROTO_TCP, 5432, 16)
NAMES = {WEB: "shop/web", DB: "shop/db"}

CATALOG = Catalog(identities=FrozenMap({
    WEB_ID: IdentityInfo(WEB_ID, ("k8s:app=web",), ("shop/web",)),
    DB_ID: IdentityInfo(DB_ID, ("k8s:app=db",), ("shop/db",)),
    OTHER_ID: IdentityInfo(OTHER_ID, ("k8s:app=other",), ()),
}))


def node(policy: dict[PolicyKey, PolicyEntry], enforce: bool = True, **kw: object) -> NodeState:
    """node-1 with the db pod; its ingress policy is `policy`."""
    state = NodeState(
        "node-1",
        ipcache=FrozenMap({N(f"{WEB}/32"): IpcacheEntry(WEB_ID), N(f"{DB}/32"): IpcacheEntry(DB_ID),
                           N("10.2.0.0/16"): IpcacheEntry(OTHER_ID)}),
        endpoints=FrozenMap({DB: EndpointEntry(DB_EP, DB_ID, enforce, False)}),
        policies=FrozenMap({DB_EP: FrozenMap(policy)}),
        attachments=frozenset({Attachment(DB, "to-pod", "b"), Attachment(DB, "from-pod", "b")}),
    )
    return replace(state, **kw) if kw else state


def conn(src: A, sport: int, dst: A = DB, dport: int = 5432, direction: Direction = ING,
         proto: int = PROTO_TCP) -> TrackedConnection:
    return TrackedConnection(int(src), int(dst), sport, dport, proto, direction)


def cuts(before: NodeState, after: NodeState, conns: Sequence[TrackedConnection]) -> list[CutRow]:
    changes = {"node-1": diff_node(before, after, CATALOG)}
    return established_cuts({"node-1": before}, {"node-1": after}, changes, {"node-1": conns}, CATALOG, NAMES)


def test_removed_allow_cuts_its_connections_and_names_the_entry() -> None:
    before = node({ALLOW_WEB: PolicyEntry(7)})
    after = node({})
    [row] = cuts(before, after, [conn(WEB, 40000), conn(WEB, 40001), conn(WEB, 40002, dport=22)])
    assert (row.src, row.dst, row.protocol, row.port, row.count) == ("shop/web", "shop/db", "tcp", 5432, 2)
    assert row.changes == ("node-1 policy shop/db ingress allow shop/web tcp/5432",)
    assert row.line == "cuts 2 established connections shop/web -> shop/db:5432/tcp"


def test_added_deny_cuts_and_names_the_deny() -> None:
    before = node({ALLOW_WEB: PolicyEntry(7)})
    deny = PolicyKey(ING, 0, PROTO_TCP, 5432, 16)
    after = node({ALLOW_WEB: PolicyEntry(7), deny: PolicyEntry(8, deny=True)})
    [row] = cuts(before, after, [conn(WEB, 40000), conn(OTHER, 40001)])
    assert row.count == 1 and row.src == "shop/web"  # OTHER was never allowed: nothing to cut
    assert row.changes == ("node-1 policy shop/db ingress deny any tcp/5432",)
    assert row.line == "cuts 1 established connection shop/web -> shop/db:5432/tcp"


def test_connections_still_allowed_or_already_dropped_are_not_cut() -> None:
    before = node({ALLOW_WEB: PolicyEntry(7)})
    after = node({ALLOW_WEB: PolicyEntry(9), PolicyKey(ING, WEB_ID, PROTO_TCP, 443, 16): PolicyEntry(10)})
    assert cuts(before, after, [conn(WEB, 40000), conn(OTHER, 40001)]) == []


def test_newly_enforced_endpoint_is_to_blame() -> None:
    before = node({}, enforce=False)
    after = node({})
    [row] = cuts(before, after, [conn(OTHER, 40000, dport=80)])
    assert (row.src, row.port, row.count) == ("k8s:app=other", 80, 1)
    assert row.changes == ("node-1 endpoint shop/db",)


def test_peer_identity_change_names_the_ipcache_prefix() -> None:
    before = node({ALLOW_WEB: PolicyEntry(7)})
    moved = FrozenMap({**dict(before.ipcache.items()), N(f"{WEB}/32"): IpcacheEntry(OTHER_ID)})
    after = replace(before, ipcache=moved)
    [row] = cuts(before, after, [conn(WEB, 40000)])
    assert row.changes == (f"node-1 ipcache {WEB}/32",)


def test_both_sides_of_one_connection_count_once() -> None:
    """A same-node connection has an egress entry (web) and an ingress entry (db): one cut."""
    web_ep = EndpointEntry(10, WEB_ID, False, True)
    allow_out = PolicyKey(EGR, DB_ID, PROTO_TCP, 5432, 16)
    before = node({ALLOW_WEB: PolicyEntry(7)})
    web_policy = FrozenMap({allow_out: PolicyEntry(6)})
    before = replace(before, endpoints=FrozenMap({**dict(before.endpoints.items()), WEB: web_ep}),
                     policies=FrozenMap({**dict(before.policies.items()), 10: web_policy}))
    after = replace(before, policies=FrozenMap({DB_EP: FrozenMap(), 10: FrozenMap()}))
    [row] = cuts(before, after, [conn(WEB, 40000), conn(WEB, 40000, direction=EGR)])
    assert row.count == 1
    assert set(row.changes) == {"node-1 policy shop/db ingress allow shop/web tcp/5432",
                                "node-1 policy shop/web egress allow shop/db tcp/5432"}


def test_icmp_echo_is_judged_on_the_request_type() -> None:
    echo = PolicyKey(ING, WEB_ID, PROTO_ICMP, 8, 16)
    [row] = cuts(node({echo: PolicyEntry(5)}), node({}), [conn(WEB, 0x77, dport=0x77, proto=PROTO_ICMP)])
    assert (row.protocol, row.port, row.count) == ("icmp", 8, 1)


def test_a_pod_leaving_the_node_is_not_a_cut() -> None:
    before = node({ALLOW_WEB: PolicyEntry(7)})
    after = replace(before, endpoints=FrozenMap(), policies=FrozenMap(), attachments=frozenset())
    assert cuts(before, after, [conn(WEB, 40000)]) == []


def test_only_nodes_whose_changes_can_cut_are_read() -> None:
    before = node({ALLOW_WEB: PolicyEntry(7)})
    after = node({})
    config_only = NodeState("node-2")
    config_changed = replace(config_only, config=DatapathConfig(ipv6_pass=True))
    asked: list[list[str]] = []

    def read(nodes: Sequence[str]) -> dict[str, list[TrackedConnection]]:
        asked.append(list(nodes))
        return {"node-1": [conn(WEB, 40000)], "node-2": [conn(WEB, 40001)]}

    plan = build_plan({"node-1": before, "node-2": config_only}, {"node-1": after, "node-2": config_changed},
                      CATALOG, connections=read, impact=False)
    assert asked == [["node-1"]]
    assert [r.count for r in plan.cuts] == [1]
    changes = {"node-1": diff_node(before, after, CATALOG), "node-2": diff_node(config_only, config_changed)}
    assert nodes_to_read(changes) == ["node-1"]


def test_no_changes_reads_nothing() -> None:
    state = node({ALLOW_WEB: PolicyEntry(7)})

    def read(nodes: Sequence[str]) -> dict[str, list[TrackedConnection]]:
        raise AssertionError("a plan without changes reads no conntrack")

    assert build_plan({"node-1": state}, {"node-1": state}, CATALOG, connections=read).cuts == ()
