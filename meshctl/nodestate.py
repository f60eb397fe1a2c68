"""The typed state of one node's datapath: what compile intends and what observe reads.

Compile (from the desired repo) and observe (from the kernel) both produce `NodeState`, so a
plan is a pure diff of two values. Everything here is plain, frozen, hashable and in host byte
order; only `meshctl.dataplane` converts to and from the C structs of bpf/lib/common.h.
"""

from __future__ import annotations

import enum
import hashlib
import json
from collections.abc import Iterator, Mapping
from dataclasses import dataclass, field
from ipaddress import IPv4Address, IPv4Network
from typing import Any, Generic, TypeVar

K = TypeVar("K")
V = TypeVar("V")


class FrozenMap(Mapping[K, V], Generic[K, V]):
    """An immutable, hashable mapping; iteration is in sorted key order (deterministic)."""

    __slots__ = ("_dict", "_hash", "_items")

    def __init__(self, items: Mapping[K, V] | None = None) -> None:
        data = dict(items or {})
        self._dict = data
        self._items = tuple(sorted(data.items(), key=lambda kv: _sort_key(kv[0])))
        self._hash: int | None = None

    def __getitem__(self, key: K) -> V:
        return self._dict[key]

    def __iter__(self) -> Iterator[K]:
        return (k for k, _ in self._items)

    def __len__(self) -> int:
        return len(self._items)

    def __hash__(self) -> int:
        if self._hash is None:
            self._hash = hash(self._items)
        return self._hash

    def __eq__(self, other: object) -> bool:
        if isinstance(other, FrozenMap):
            return self._items == other._items
        if isinstance(other, Mapping):
            return self._dict == dict(other)
        return NotImplemented

    def __repr__(self) -> str:
        return f"FrozenMap({self._dict!r})"


def _sort_key(key: Any) -> Any:
    # Keys of one map share a type; IPv4 types and dataclasses sort natively.
    return key


class Direction(enum.IntEnum):
    """enum direction in common.h."""

    INGRESS = 0
    EGRESS = 1

    @property
    def label(self) -> str:
        return self.name.lower()


class ReservedIdentity(enum.IntEnum):
    """enum reserved_identity in common.h (Cilium's numericidentity.go)."""

    ANY = 0
    HOST = 1
    WORLD = 2
    UNMANAGED = 3
    HEALTH = 4
    INIT = 5
    REMOTE_NODE = 6
    KUBE_APISERVER = 7
    INGRESS = 8


CLUSTER_IDENTITY_MIN = 256
CIDR_IDENTITY_MIN = 1 << 24

PROTO_ANY = 0
PROTO_ICMP = 1
PROTO_TCP = 6
PROTO_UDP = 17
PROTO_SCTP = 132
PROTOCOL_NAMES = {PROTO_ANY: "any", PROTO_ICMP: "icmp", PROTO_TCP: "tcp", PROTO_UDP: "udp", PROTO_SCTP: "sctp"}


@dataclass(frozen=True, order=True)
class IpcacheEntry:
    """struct ipcache_value: the identity of every address in a prefix."""

    identity: int
    flags: int = 0


@dataclass(frozen=True, order=True)
class EndpointEntry:
    """struct endpoint_value: a pod on this node."""

    endpoint_id: int
    identity: int
    enforce_ingress: bool
    enforce_egress: bool


@dataclass(frozen=True, order=True)
class PolicyKey:
    """struct policy_key, without the LPM encoding.

    protocol 0 = any protocol (then port and port_prefix are 0). port_prefix is how many leading
    bits of port count: 16 = exactly `port`, 0 = all ports, n = the range port..port+2^(16-n)-1.
    """

    direction: Direction
    identity: int
    protocol: int = PROTO_ANY
    port: int = 0
    port_prefix: int = 0

    def __post_init__(self) -> None:
        if self.protocol == PROTO_ANY and (self.port or self.port_prefix):
            raise ValueError("a key for any protocol cannot name a port")
        if not 0 <= self.port_prefix <= 16:
            raise ValueError(f"port_prefix {self.port_prefix} out of 0..16")
        if self.port & self.host_mask:
            raise ValueError(f"port {self.port} has bits beyond prefix /{self.port_prefix}")

    @property
    def host_mask(self) -> int:
        return (1 << (16 - self.port_prefix)) - 1

    @property
    def port_range(self) -> tuple[int, int] | None:
        """(first, last) port covered, or None for any protocol."""
        if self.protocol == PROTO_ANY:
            return None
        return (self.port, self.port | self.host_mask)

    @property
    def lpm_prefixlen(self) -> int:
        """prefixlen field of struct policy_key."""
        if self.protocol == PROTO_ANY:
            return 40
        return 48 + self.port_prefix

    def covers(self, other: PolicyKey) -> bool:
        """True when every packet matching `other` also matches self (same direction)."""
        if self.direction != other.direction:
            return False
        if self.identity not in (ReservedIdentity.ANY, other.identity):
            return False
        if self.protocol == PROTO_ANY:
            return True
        if self.protocol != other.protocol:
            return False
        assert other.port_range is not None and self.port_range is not None
        lo, hi = self.port_range
        olo, ohi = other.port_range
        return lo <= olo and ohi <= hi


@dataclass(frozen=True, order=True)
class PolicyEntry:
    """struct policy_value."""

    cookie: int
    deny: bool = False


@dataclass(frozen=True, order=True)
class Attachment:
    """A datapath program attached on the node side of a pod's veth."""

    endpoint: IPv4Address
    hook: str  # "from-pod" (tc ingress of the node-side veth) or "to-pod" (tc egress)
    build: str  # sha256 of the loaded object (bpf build hash)


@dataclass(frozen=True)
class DatapathConfig:
    """struct datapath_config."""

    ipv6_pass: bool = False
    ct_timeout_tcp_s: int = 21600
    ct_timeout_non_tcp_s: int = 60
    ct_timeout_syn_s: int = 60
    ct_timeout_close_s: int = 10


@dataclass(frozen=True)
class NodeState:
    """Everything meshctl manages on one node. Equal values mean nothing to do."""

    node: str
    config: DatapathConfig = field(default_factory=DatapathConfig)
    ipcache: FrozenMap[IPv4Network, IpcacheEntry] = field(default_factory=FrozenMap)
    endpoints: FrozenMap[IPv4Address, EndpointEntry] = field(default_factory=FrozenMap)
    # endpoint_id -> that endpoint's policy map
    policies: FrozenMap[int, FrozenMap[PolicyKey, PolicyEntry]] = field(default_factory=FrozenMap)
    attachments: frozenset[Attachment] = frozenset()

    def canonical(self) -> dict[str, Any]:
        """A JSON-ready dict with sorted keys and lists: the input of the fingerprint."""
        return {
            "node": self.node,
            "config": self.config.__dict__,
            "ipcache": [[str(p), e.identity, e.flags] for p, e in self.ipcache.items()],
            "endpoints": [
                [str(a), e.endpoint_id, e.identity, e.enforce_ingress, e.enforce_egress]
                for a, e in self.endpoints.items()
            ],
            "policies": [
                [
                    ep,
                    [
                        [int(k.direction), k.identity, k.protocol, k.port, k.port_prefix, v.cookie, v.deny]
                        for k, v in entries.items()
                    ],
                ]
                for ep, entries in self.policies.items()
            ],
            "attachments": sorted([str(a.endpoint), a.hook, a.build] for a in self.attachments),
        }

    @classmethod
    def from_canonical(cls, d: Mapping[str, Any]) -> NodeState:
        """Inverse of canonical(): saved plans and the state carry exact targets in that form."""
        return cls(
            node=d["node"],
            config=DatapathConfig(**d["config"]),
            ipcache=FrozenMap(
                {IPv4Network(p): IpcacheEntry(identity, flags) for p, identity, flags in d["ipcache"]}
            ),
            endpoints=FrozenMap(
                {
                    IPv4Address(a): EndpointEntry(eid, identity, bool(ing), bool(eg))
                    for a, eid, identity, ing, eg in d["endpoints"]
                }
            ),
            policies=FrozenMap(
                {
                    int(ep): FrozenMap(
                        {
                            PolicyKey(Direction(dr), ident, proto, port, pfx): PolicyEntry(cookie, bool(deny))
                            for dr, ident, proto, port, pfx, cookie, deny in entries
                        }
                    )
                    for ep, entries in d["policies"]
                }
            ),
            attachments=frozenset(
                Attachment(IPv4Address(a), hook, build) for a, hook, build in d["attachments"]
            ),
        )

    def fingerprint(self) -> str:
        """sha256 of the canonical state: plans record it to detect staleness."""
        body = json.dumps(self.canonical(), sort_keys=True, separators=(",", ":"))
        return "sha256:" + hashlib.sha256(body.encode()).hexdigest()
