"""A fixed two-node plan (three-tier demo) used by the golden and plan-file tests."""

from __future__ import annotations

from datetime import UTC, datetime
from ipaddress import IPv4Address as A
from ipaddress import IPv4Network as N

from meshctl.catalog import Catalog, IdentityInfo, RuleOrigin
from meshctl.connections import TrackedConnection
from meshctl.nodestate import (
    PROTO_ANY,
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
from meshctl.plan import Plan, PodTarget, build_plan
from meshctl.state import State

FRONTEND, API, DB, OLD_DB = A("10.101.1.10"), A("10.101.2.20"), A("10.101.2.30"), A("10.101.2.99")
C_FE_EGRESS, C_API_IN, C_API_METRICS, C_DB_IN, C_DB_DENY = 0x101, 0x102, 0x103, 0x104, 0x105
OLD_BUILD, NEW_BUILD = "sha256:" + "a" * 64, "sha256:" + "b" * 64
CREATED = datetime(2025, 1, 2, 3, 4, 5, tzinfo=UTC)

IPCACHE = {
    N(f"{FRONTEND}/32"): IpcacheEntry(256),
    N(f"{API}/32"): IpcacheEntry(257),
    N(f"{DB}/32"): IpcacheEntry(258),
}


def _atts(*ips: A, build: str) -> frozenset[Attachment]:
    return frozenset(Attachment(ip, hook, build) for ip in ips for hook in ("from-pod", "to-pod"))


def _ep(eid: int, identity: int, enforce_ingress: bool) -> EndpointEntry:
    return EndpointEntry(eid, identity, enforce_ingress, False)


def observed() -> dict[str, NodeState]:
    return {
        "node-1": NodeState(
            "node-1",
            ipcache=FrozenMap(IPCACHE),
            endpoints=FrozenMap({FRONTEND: EndpointEntry(11, 256, False, False)}),
            policies=FrozenMap({11: FrozenMap()}),
            attachments=_atts(FRONTEND, build=OLD_BUILD),
        ),
        "node-2": NodeState(
            "node-2",
            ipcache=FrozenMap({**IPCACHE, N(f"{OLD_DB}/32"): IpcacheEntry(300)}),
            endpoints=FrozenMap({API: _ep(21, 257, False), DB: _ep(22, 258, False)}),
            policies=FrozenMap({21: FrozenMap(), 22: FrozenMap()}),
            attachments=_atts(API, DB, build=NEW_BUILD),
        ),
    }


def intended() -> dict[str, NodeState]:
    ing, eg = Direction.INGRESS, Direction.EGRESS
    return {
        "node-1": NodeState(
            "node-1",
            ipcache=FrozenMap(IPCACHE),
            endpoints=FrozenMap({FRONTEND: EndpointEntry(11, 256, False, True)}),
            policies=FrozenMap({
                11: FrozenMap({PolicyKey(eg, 257, PROTO_TCP, 3000, 16): PolicyEntry(C_FE_EGRESS)}),
            }),
            attachments=_atts(FRONTEND, build=NEW_BUILD),
        ),
        "node-2": NodeState(
            "node-2",
            config=DatapathConfig(ipv6_pass=True),
            ipcache=FrozenMap(IPCACHE),
            endpoints=FrozenMap({API: _ep(21, 257, True), DB: _ep(23, 258, True)}),
            policies=FrozenMap({
                21: FrozenMap({
                    PolicyKey(ing, 256, PROTO_TCP, 3000, 16): PolicyEntry(C_API_IN),
                    PolicyKey(ing, 0, PROTO_TCP, 8000, 10): PolicyEntry(C_API_METRICS),
                }),
                23: FrozenMap({
                    PolicyKey(ing, 257, PROTO_TCP, 5432, 16): PolicyEntry(C_DB_IN),
                    PolicyKey(ing, 2, PROTO_ANY, 0, 0): PolicyEntry(C_DB_DENY, deny=True),
                }),
            }),
            attachments=_atts(API, DB, build=NEW_BUILD),
        ),
    }


def catalog() -> Catalog:
    def origin(kind: str, name: str, section: str, index: int, file: str, line: int) -> RuleOrigin:
        return RuleOrigin(kind, "demo", name, section, index, file, line)

    cnp = "CiliumNetworkPolicy"
    return Catalog(
        identities=FrozenMap({
            2: IdentityInfo(2, ("reserved:world",)),
            256: IdentityInfo(256, ("k8s:app=frontend",), ("demo/frontend",)),
            257: IdentityInfo(257, ("k8s:app=api",), ("demo/api",)),
            258: IdentityInfo(258, ("k8s:app=database",), ("demo/database",)),
        }),
        endpoints=FrozenMap({
            "node-1": FrozenMap({11: "demo/frontend"}),
            "node-2": FrozenMap({21: "demo/api", 23: "demo/database"}),
        }),
        cookies=FrozenMap({
            C_FE_EGRESS: origin(cnp, "frontend-egress", "egress", 0, "policies/frontend.yaml", 9),
            C_API_IN: origin("NetworkPolicy", "api-ingress", "ingress", 0, "policies/api.yaml", 12),
            C_API_METRICS: origin("NetworkPolicy", "api-ingress", "ingress", 1, "policies/api.yaml", 20),
            C_DB_IN: origin(cnp, "db-ingress", "ingress", 0, "policies/db.yaml", 10),
            C_DB_DENY: origin(cnp, "db-ingress", "ingressDeny", 0, "policies/db.yaml", 18),
        }),
        isolation=FrozenMap({
            "demo/api": FrozenMap({Direction.INGRESS: ("NetworkPolicy demo/api-ingress",)}),
            "demo/database": FrozenMap({Direction.INGRESS: ("CiliumNetworkPolicy demo/db-ingress",)}),
            "demo/frontend": FrozenMap({Direction.EGRESS: ("CiliumNetworkPolicy demo/frontend-egress",)}),
        }),
    )


PODS = [
    PodTarget("demo/frontend", FRONTEND, (("TCP", 8080),)),
    PodTarget("demo/api", API, (("TCP", 3000),)),
    PodTarget("demo/database", DB, (("TCP", 5432),)),
]

WORLD_CLIENT = A("198.51.100.7")


def _conn(src: A, dst: A, sport: int, dport: int, direction: Direction) -> TrackedConnection:
    return TrackedConnection(int(src), int(dst), sport, dport, PROTO_TCP, direction)


# Live established connections: frontend -> database and world -> database are cut (new default
# deny, new deny entry); frontend -> api stays allowed (the new allow entry).
CONNECTIONS = {
    "node-1": [
        _conn(FRONTEND, DB, 41000, 5432, Direction.EGRESS),
        _conn(FRONTEND, API, 41001, 3000, Direction.EGRESS),
    ],
    "node-2": [
        _conn(FRONTEND, DB, 41000, 5432, Direction.INGRESS),
        _conn(FRONTEND, API, 41001, 3000, Direction.INGRESS),
        _conn(WORLD_CLIENT, DB, 50000, 5432, Direction.INGRESS),
        _conn(WORLD_CLIENT, DB, 50001, 5432, Direction.INGRESS),
    ],
}

STATE = State(lineage="0b7e4c1e-0000-4000-8000-000000000001", serial=3)
COMPILED_WARNINGS = ("policies/api.yaml:24: spec.ingress[1].toPorts[0].rules: L7 rules are not enforced yet",)


class _Desired:
    commit = "4f2a9c1d0e5b6a7f8091a2b3c4d5e6f708192a3b"
    dirty = False


def make_plan() -> Plan:
    return build_plan(
        observed(), intended(), catalog(),
        desired=_Desired(), state=STATE, compiled_warnings=COMPILED_WARNINGS, pods=PODS, created_at=CREATED,
        connections=CONNECTIONS,
    )
