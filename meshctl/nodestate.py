"""The typed state of one node's datapath: what compile intends and what observe reads.

Compile (from the desired repo) and observe (from the kernel) both produce `NodeState`, so a
plan is a pure diff of two values. Everything here is plain, frozen, hashable and in host byte
order; only `meshctl.dataplane` converts to and from the C structs of bpf/lib/common.h.
"""

from __future__ import annotations

import array
import base64
import enum
import hashlib
import json
from collections.abc import Callable, ItemsView, Iterable, Iterator, Mapping, ValuesView
from dataclasses import dataclass, field
from ipaddress import IPv4Address, IPv4Network
from typing import Any, Generic, TypeVar

K = TypeVar("K")
V = TypeVar("V")


class FrozenMap(Mapping[K, V], Generic[K, V]):
    """An immutable, hashable mapping; iteration is in sorted key order (deterministic)."""

    # _text: this map's canonical JSON text, made once per object (see canonical_text): maps are
    # shared by endpoints, nodes and states, so fingerprints and digests format each one once.
    __slots__ = ("_dict", "_hash", "_items", "_text")

    def __init__(self, items: Mapping[K, V] | None = None) -> None:
        data = dict(items or {})
        self._dict: dict[K, V] | None = data
        self._items = tuple(sorted(data.items(), key=lambda kv: _sort_key(kv[0])))
        self._hash: int | None = None
        self._text: str | None = None

    @classmethod
    def from_sorted(cls, items: Iterable[tuple[K, V]]) -> FrozenMap[K, V]:
        """Wrap items that are already in sorted key order with unique keys, without re-sorting.

        For builders that produce huge maps in order (the compiler): sorting dataclass keys again
        costs more than building them. The caller guarantees the order; the value is identical to
        `FrozenMap(dict(items))`.
        """
        self = cls.__new__(cls)
        self._items = tuple(items)
        self._no_cache()  # the dict is built on first lookup: hashing dataclass keys costs more
        return self

    def _no_cache(self, text: str | None = None) -> None:
        """The lookup dict, hash and text slots, unset (`text`: the canonical text, when known):
        for from_sorted and the subclasses whose entries are made on first read (ITEMS_SLOT)."""
        self._dict = None
        self._hash = None
        self._text = text

    def _mapping(self) -> dict[K, V]:
        if self._dict is None:
            self._dict = dict(self._items)
        return self._dict

    def __getitem__(self, key: K) -> V:
        return self._mapping()[key]

    def __iter__(self) -> Iterator[K]:
        return (k for k, _ in self._items)

    def __len__(self) -> int:
        return len(self._items)

    def items(self) -> _FrozenItems[K, V]:
        return _FrozenItems(self)

    def values(self) -> _FrozenValues[V]:
        return _FrozenValues(self)

    def __hash__(self) -> int:
        if self._hash is None:
            self._hash = hash(self._items)
        return self._hash

    def canonical_text(self, make: Callable[[FrozenMap[K, V]], str]) -> str:
        """`make(self)`, computed on the first call and kept on the object (immutable content).

        One map object has one kind of content (a policy map, an ipcache...), so one text."""
        text = self._text
        if text is None:
            text = self._text = make(self)
        return text

    def adopt_text(self, equal: FrozenMap[K, V]) -> None:
        """Take the canonical text of `equal`, a map the caller compared equal to this one (the
        plan reuses an observed map's text for the compiled map it equals)."""
        if self._text is None:
            self._text = equal._text

    def __eq__(self, other: object) -> bool:
        if isinstance(other, FrozenMap):
            if self is other:
                return True
            if self._text is not None and other._text is not None:
                return self._text == other._text  # equal canonical texts <=> equal content
            return self._items == other._items
        if isinstance(other, Mapping):
            return self._mapping() == dict(other)
        return NotImplemented

    def __repr__(self) -> str:
        return f"FrozenMap({self._mapping()!r})"


# FrozenMap's `_items` slot, for the subclasses that make their entries on first read: they
# shadow the attribute with a property and fill the slot through this descriptor.
ITEMS_SLOT = FrozenMap.__dict__["_items"]


class PatchedMap(FrozenMap[K, V]):
    """`base` with new values for some of its keys. A diff against `base`, or against another
    patch of it, compares only the patched keys (see patched_keys): an incremental plan changes
    a few of 10,000 endpoints. The entries are made on first read."""

    __slots__ = ("base", "patch")

    def __init__(self, base: FrozenMap[K, V], patch: Mapping[K, V]) -> None:
        self.base, self.patch = base, dict(patch)
        self._no_cache()

    @property  # type: ignore[override]
    def _items(self) -> tuple[tuple[K, V], ...]:
        try:
            return ITEMS_SLOT.__get__(self, FrozenMap)  # type: ignore[no-any-return]
        except AttributeError:
            patch = self.patch
            made = tuple((k, patch.get(k, v)) for k, v in self.base.items())  # same keys, same order
            ITEMS_SLOT.__set__(self, made)
            return made

    def __getitem__(self, key: K) -> V:
        return self.patch[key] if key in self.patch else self.base[key]

    def __len__(self) -> int:
        return len(self.base)


def patched(base: FrozenMap[K, V], values: Mapping[K, V | None]) -> FrozenMap[K, V]:
    """`base` with `values` (None: the key goes). New values for keys it has make a PatchedMap;
    a new or removed key, a plain map."""
    if not values:
        return base
    if all(v is not None and k in base for k, v in values.items()):
        return PatchedMap(base, values)  # type: ignore[arg-type]  # no None among them
    rows = dict(base.items())
    for key, value in values.items():
        if value is None:
            rows.pop(key, None)
        else:
            rows[key] = value
    return FrozenMap(rows)


def patched_keys(before: FrozenMap[K, V], after: FrozenMap[K, V]) -> set[K] | None:
    """The only keys whose values can differ, when one map patches the other or both patch one
    base; None otherwise."""
    b_base, b_keys = (before.base, before.patch.keys()) if isinstance(before, PatchedMap) else (before, ())
    a_base, a_keys = (after.base, after.patch.keys()) if isinstance(after, PatchedMap) else (after, ())
    return {*b_keys, *a_keys} if b_base is a_base else None


class _FrozenItems(ItemsView[K, V]):
    """items() in stored order without a hash lookup per key (the ABC's view looks each one up)."""

    def __iter__(self) -> Iterator[tuple[K, V]]:
        return iter(self._mapping._items)  # type: ignore[attr-defined]


class _FrozenValues(ValuesView[V]):
    def __iter__(self) -> Iterator[V]:
        return (v for _, v in self._mapping._items)  # type: ignore[attr-defined]


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
PROTOCOL_NAMES = {
    PROTO_ANY: "any", PROTO_ICMP: "icmp", PROTO_TCP: "tcp", PROTO_UDP: "udp", PROTO_SCTP: "sctp",
}


@dataclass(frozen=True, order=True)
class IpcacheEntry:
    """struct ipcache_value: the identity of every address in a prefix."""

    identity: int
    flags: int = 0


# AUDIT_MAP_BIT in common.h: policies[endpoint_id | AUDIT_MAP_BIT] is the endpoint's map with its
# staged policies added; the datapath consults it only for the directions the endpoint audits.
AUDIT_MAP_BIT = 1 << 31


def audit_map_id(endpoint_id: int) -> int:
    return endpoint_id | AUDIT_MAP_BIT


def is_audit_map(map_id: int) -> bool:
    return bool(map_id & AUDIT_MAP_BIT)


@dataclass(frozen=True, order=True)
class EndpointEntry:
    """struct endpoint_value: a pod on this node."""

    endpoint_id: int
    identity: int
    enforce_ingress: bool
    enforce_egress: bool
    # staged policies select it in this direction: its verdicts are also judged against the
    # enforced+staged map at policies[audit_map_id(endpoint_id)] (see meshctl.model.staging)
    audit_ingress: bool = False
    audit_egress: bool = False

    def enforces(self, direction: Direction) -> bool:
        return self.enforce_ingress if direction == Direction.INGRESS else self.enforce_egress

    def audits(self, direction: Direction) -> bool:
        return self.audit_ingress if direction == Direction.INGRESS else self.audit_egress


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
    """struct policy_value. proxy_port: an allow whose connections the node's L7 proxy judges."""

    cookie: int
    deny: bool = False
    proxy_port: int = 0

    @property
    def row_tail(self) -> str:
        """The value's half of a canonical policy row: "cookie,deny]" (",port" only with a proxy)."""
        deny = "true" if self.deny else "false"
        return f"{self.cookie},{deny},{self.proxy_port}]" if self.proxy_port else f"{self.cookie},{deny}]"


# Interned policy keys and values, shared by every producer of NodeStates in one process (observe
# decodes into them; compile may too). Equal maps built from shared objects compare at C speed
# (tuple comparison short-cuts on identity) instead of calling the dataclass __eq__ per entry.
PolicyKeyTuple = tuple[int, int, int, int, int]  # (direction, identity, protocol, port, port_prefix)
POLICY_KEYS: dict[PolicyKeyTuple, PolicyKey] = {}
POLICY_ENTRIES: dict[tuple[int, bool, int], PolicyEntry] = {}
_INTERN_LIMIT = 1_000_000


def intern_policy_key(t: PolicyKeyTuple) -> PolicyKey:
    """The shared PolicyKey of a valid field tuple (validated once, when first made)."""
    key = POLICY_KEYS.get(t)
    if key is None:
        if len(POLICY_KEYS) >= _INTERN_LIMIT:
            POLICY_KEYS.clear()
        key = POLICY_KEYS[t] = PolicyKey(Direction(t[0]), t[1], t[2], t[3], t[4])
    return key


def intern_policy_entry(cookie: int, deny: bool, proxy_port: int = 0) -> PolicyEntry:
    entry = POLICY_ENTRIES.get((cookie, deny, proxy_port))
    if entry is None:
        if len(POLICY_ENTRIES) >= _INTERN_LIMIT:
            POLICY_ENTRIES.clear()
        entry = POLICY_ENTRIES[(cookie, deny, proxy_port)] = PolicyEntry(cookie, deny, proxy_port)
    return entry


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
    proxy: bool = False  # the node has L7 ports: its datapath looks up the proxy's sockets

    def canonical(self) -> dict[str, Any]:
        """The fields; `proxy` only when set, so nodes without L7 keep the fingerprints they had."""
        return {k: v for k, v in self.__dict__.items() if k != "proxy" or v}


@dataclass(frozen=True, order=True)
class WireguardPeer:
    """One WireGuard peer of a node (keyed by its public key in WireguardState.peers).

    `routed` says the node sends the peer's allowed IPs through the tunnel (routes in the
    encryption table); a peer that is configured but not routed only accepts encrypted traffic.
    `name` (the peer's node) is for people only: observe cannot know it, so it never compares.
    """

    endpoint: str  # "172.31.250.2:51871"
    allowed_ips: tuple[IPv4Network, ...] = ()
    keepalive: int = 0  # seconds, 0 = off
    routed: bool = False
    name: str = field(default="", compare=False)


@dataclass(frozen=True)
class WireguardState:
    """A node's WireGuard side; only PUBLIC keys ever appear here (never the private key).

    interface "" = no interface. public_key "" on an interface = generate a key on the node at
    apply time (known after apply). strict = peer pod CIDRs whose plain traffic is dropped.
    """

    interface: str = ""
    public_key: str = ""
    listen_port: int = 0
    fwmark: int = 0
    peers: FrozenMap[str, WireguardPeer] = field(default_factory=FrozenMap)
    sources: tuple[str, ...] = ()  # routing rule selectors into the tunnel table: "from 10.1.0.0/24"
    strict: tuple[IPv4Network, ...] = ()

    def canonical(self) -> dict[str, Any]:
        return {
            "interface": self.interface,
            "public_key": self.public_key,
            "listen_port": self.listen_port,
            "fwmark": self.fwmark,
            "peers": [
                [k, p.endpoint, [str(a) for a in p.allowed_ips], p.keepalive, p.routed]
                for k, p in self.peers.items()
            ],
            "sources": list(self.sources),
            "strict": [str(n) for n in self.strict],
        }

    @classmethod
    def from_canonical(cls, d: Mapping[str, Any]) -> WireguardState:
        return cls(
            interface=d["interface"],
            public_key=d["public_key"],
            listen_port=int(d["listen_port"]),
            fwmark=int(d["fwmark"]),
            peers=FrozenMap(
                {
                    k: WireguardPeer(ep, tuple(IPv4Network(a) for a in ips), int(ka), bool(routed))
                    for k, ep, ips, ka, routed in d["peers"]
                }
            ),
            sources=tuple(d["sources"]),
            strict=tuple(IPv4Network(n) for n in d["strict"]),
        )


NO_ENCRYPTION = WireguardState()


@dataclass(frozen=True, order=True)
class LbFrontend:
    """struct lb_service_key: one service address (ClusterIP, NodePort, LoadBalancer/external IP)."""

    address: IPv4Address
    port: int
    protocol: int  # PROTO_TCP / PROTO_UDP

    def __str__(self) -> str:
        return f"{self.address}:{self.port}/{PROTOCOL_NAMES.get(self.protocol, str(self.protocol)).upper()}"


@dataclass(frozen=True, order=True)
class LbBackendEntry:
    """struct lb_backend: one backend address (keyed by its stable backend id)."""

    address: IPv4Address
    port: int
    protocol: int
    local: bool = False  # runs on this node

    def __str__(self) -> str:
        return f"{self.address}:{self.port}/{PROTOCOL_NAMES.get(self.protocol, str(self.protocol)).upper()}"


@dataclass(frozen=True)
class LbService:
    """struct lb_service_value + its backend slots and Maglev table.

    backends: backend ids in slot order (random selection); maglev: backend id of every Maglev
    slot (empty = random). `name` ("demo/api") is for people only: observe cannot know it.
    """

    service_id: int
    backends: tuple[int, ...] = ()
    maglev: tuple[int, ...] = ()
    affinity_timeout_s: int = 0  # 0 = no sessionAffinity
    external: bool = False  # translated at the underlay interface too (NodePort, LoadBalancer)
    dsr: bool = False  # north-south to remote backends by DSR (else SNAT)
    name: str = field(default="", compare=False)


@dataclass(frozen=True)
class LoadBalancerState:
    """A node's load balancer (kube-proxy replacement). `settings` is recorded on the node so a
    change of mode, algorithm, table size or seed shows as a replace."""

    enabled: bool = False
    interface: str = ""  # the node's underlay device: from_netdev/to_netdev attached there
    snat_address: IPv4Address | None = None  # the node's underlay address
    settings: str = ""  # "mode=snat algorithm=maglev tableSize=16381 hashSeed=..."
    services: FrozenMap[LbFrontend, LbService] = field(default_factory=FrozenMap)
    backends: FrozenMap[int, LbBackendEntry] = field(default_factory=FrozenMap)

    def canonical(self) -> dict[str, Any]:
        return {
            "enabled": self.enabled,
            "interface": self.interface,
            "snat_address": str(self.snat_address) if self.snat_address else "",
            "settings": self.settings,
            "services": [
                [str(f.address), f.port, f.protocol, s.service_id, list(s.backends), _pack_ids(s.maglev),
                 s.affinity_timeout_s, s.external, s.dsr]
                for f, s in self.services.items()
            ],
            "backends": [[i, str(b.address), b.port, b.protocol, b.local] for i, b in self.backends.items()],
        }

    @classmethod
    def from_canonical(cls, d: Mapping[str, Any]) -> LoadBalancerState:
        return cls(
            enabled=bool(d["enabled"]),
            interface=d["interface"],
            snat_address=IPv4Address(d["snat_address"]) if d["snat_address"] else None,
            settings=d["settings"],
            services=FrozenMap(
                {
                    LbFrontend(IPv4Address(a), int(port), int(proto)): LbService(
                        int(sid), tuple(int(b) for b in bes), _unpack_ids(mag), int(aff), bool(ext), bool(dsr)
                    )
                    for a, port, proto, sid, bes, mag, aff, ext, dsr in d["services"]
                }
            ),
            backends=FrozenMap(
                {
                    int(i): LbBackendEntry(IPv4Address(a), int(p), int(pr), bool(loc))
                    for i, a, p, pr, loc in d["backends"]
                }
            ),
        )


NO_LOAD_BALANCER = LoadBalancerState()


@dataclass(frozen=True, order=True)
class ForeignEntry:
    """A map entry in a form the compiler never writes, kept byte for byte.

    Observe decodes exactly what the kernel holds: an entry whose bytes do not re-encode from
    its decoded value (an LPM key with bits beyond its prefix, a prefix length the compiler
    never uses, unknown flag bits, a non-zero pad, a slot or table no service uses) would
    otherwise be normalised into a compiled twin and hide. It is kept here instead, so the
    plan destroys it, drift reports it and the fingerprint covers it. Compile never produces one.

    map: the pinned map's name ("policy" for an endpoint's inner policy map); owner: the
    endpoint id of that inner map, else 0; key and value: the raw bytes in hex (a Maglev table
    is recorded by length and sha256).
    """

    map: str
    owner: int
    key: str
    value: str

    def canonical(self) -> list[Any]:
        return [self.map, self.owner, self.key, self.value]


# The port of the node's HTTP proxy listener (127.0.0.1): policy entries of L7 ports carry it.
HTTP_PROXY_PORT = 15001
DNS_PORT = 53
# The port of the node's DNS proxy (127.0.0.1, UDP and TCP): entries of ports with DNS rules carry it.
DNS_PROXY_PORT = 15053
# A node's fqdn table (NodeState.fqdn), key -> identity, holds four kinds of key:
# - a toFQDNs selector's text ("api.stripe.com", "*.stripe.com");
# - a set of overlapping selectors: their texts, sorted, joined by SET_SEPARATOR;
# - "SELECTOR@PREFIX": the identity of IPs a selector (or set) learns inside one of the node's
#   CIDR prefixes (the rules of both allow it);
# - the DNS proxy's settings ([dns] of meshctl.toml), under '@' keys no name has (value 1 = on).
DNS_MIN_TTL, DNS_NXDOMAIN = "@minTTL", "@nameError"
DNS_SETTINGS = (DNS_MIN_TTL, DNS_NXDOMAIN)
SET_SEPARATOR, FQDN_IN_CIDR = ",", "@"


def fqdn_set_key(texts: Iterable[str]) -> str:
    return SET_SEPARATOR.join(sorted(texts))


def fqdn_in_cidr_key(key: str, prefix: IPv4Network) -> str:
    return f"{key}{FQDN_IN_CIDR}{prefix}"


@dataclass(frozen=True)
class FqdnTable:
    """A node's fqdn table read by kind of key (see above)."""

    selectors: dict[str, int]
    sets: dict[frozenset[str], int]
    in_cidr: dict[str, tuple[tuple[IPv4Network, int], ...]]  # selector or set key -> longest prefix first
    settings: dict[str, int]

    @classmethod
    def of(cls, table: Mapping[str, int]) -> FqdnTable:
        selectors, sets, settings = {}, {}, {}
        in_cidr: dict[str, list[tuple[IPv4Network, int]]] = {}
        for key, identity in table.items():
            if key in DNS_SETTINGS:
                settings[key] = int(identity)
            elif FQDN_IN_CIDR in key:
                text, _, prefix = key.partition(FQDN_IN_CIDR)
                in_cidr.setdefault(text, []).append((IPv4Network(prefix), int(identity)))
            elif SET_SEPARATOR in key:
                sets[frozenset(key.split(SET_SEPARATOR))] = int(identity)
            else:
                selectors[key] = int(identity)
        longest = {k: tuple(sorted(v, key=lambda item: -item[0].prefixlen)) for k, v in in_cidr.items()}
        return cls(selectors, sets, longest, settings)


@dataclass(frozen=True, order=True)
class HttpRule:
    """One `rules.http[]` item (Cilium's PortRuleHTTP): every field that is set must match.

    method, path and host are extended regular expressions matched in full (empty = any);
    headers: "Name" (present) or "Name: value" (exactly that value); header_matches:
    headerMatches as (name, value) with the default mismatch action (the request is denied)."""

    method: str = ""
    path: str = ""
    host: str = ""
    headers: tuple[str, ...] = ()
    header_matches: tuple[tuple[str, str], ...] = ()

    def canonical(self) -> list[Any]:
        return [self.method, self.path, self.host, list(self.headers), [list(h) for h in self.header_matches]]

    @property
    def text(self) -> str:
        """`GET /api/v1/users/[0-9]+ host=... Content-Type: application/json` (unset fields: *):
        the request shape the rule lets through, as plan and impact show it."""
        parts = [self.method or "*", self.path or "*"]
        parts += [f"host={self.host}"] if self.host else []
        parts += list(self.headers) + [f"{n}: {v}" if v else n for n, v in self.header_matches]
        return " ".join(parts)

    @classmethod
    def from_canonical(cls, row: list[Any]) -> HttpRule:
        method, path, host, headers, matches = row
        return cls(method, path, host, tuple(headers), tuple((n, v) for n, v in matches))


@dataclass(frozen=True, order=True)
class HttpPolicy:
    """What the node's L7 proxy allows on one L7 port of a local endpoint, from one peer.

    The policy map entry of (endpoint, direction, peer, port) carries the proxy port, so the
    datapath hands such connections to the proxy; the proxy allows a request when any HttpPolicy
    of its endpoint, direction and port whose peer matches the connection has a rule that
    matches the request. identity 0 = any peer; cookie = the rule that gives these."""

    endpoint: IPv4Address
    direction: Direction
    port: int
    last_port: int  # port..last_port: a range (Cilium's endPort), or one port
    identity: int
    cookie: int
    rules: tuple[HttpRule, ...]

    def canonical(self) -> list[Any]:
        return [str(self.endpoint), int(self.direction), self.port, self.last_port, self.identity,
                self.cookie, [r.canonical() for r in self.rules]]

    @classmethod
    def from_canonical(cls, row: list[Any]) -> HttpPolicy:
        ep, direction, port, last, identity, cookie, rules = row
        return cls(IPv4Address(ep), Direction(direction), int(port), int(last), int(identity), int(cookie),
                   tuple(HttpRule.from_canonical(r) for r in rules))

    @property
    def ports(self) -> str:
        return str(self.port) if self.port == self.last_port else f"{self.port}-{self.last_port}"


@dataclass(frozen=True, order=True)
class DnsPolicy:
    """What the node's DNS proxy lets through from one local endpoint to one peer on a DNS port
    (`rules.dns`, egress only): queries whose name matches one of `names` (toFQDNs-style
    selector texts: a name, or a pattern with `*`; "*" = every name). identity 0 = any peer;
    cookie = the rule that gives these."""

    endpoint: IPv4Address
    port: int
    last_port: int
    identity: int
    cookie: int
    names: tuple[str, ...]

    def canonical(self) -> list[Any]:
        return [str(self.endpoint), self.port, self.last_port, self.identity, self.cookie, list(self.names)]

    @classmethod
    def from_canonical(cls, row: list[Any]) -> DnsPolicy:
        ep, port, last, identity, cookie, names = row
        return cls(IPv4Address(ep), int(port), int(last), int(identity), int(cookie), tuple(names))

    @property
    def ports(self) -> str:
        return str(self.port) if self.port == self.last_port else f"{self.port}-{self.last_port}"


@dataclass(frozen=True, order=True)
class ForeignProgram:
    """A tc or tcx program on an interface meshctl manages that meshctl did not attach.

    It can pass traffic that meshctl's policy would drop (a tcx program before meshctl's that
    returns TC_ACT_OK ends the chain), so plan, drift and status report it. It is not intent:
    meshctl never removes it unless told to, and it is left out of comparisons and fingerprints.
    """

    interface: str
    hook: str  # "tcx-ingress" | "tcx-egress" | "tc-ingress" | "tc-egress"
    prog_id: int
    name: str
    position: str  # "before" or "after" meshctl's program on that hook ("" when meshctl has none)


def _pack_ids(ids: tuple[int, ...]) -> str:
    """A Maglev table (thousands of u32) as base64 of little-endian u32: compact canonical JSON."""
    return base64.b64encode(array.array("I", ids).tobytes()).decode() if ids else ""


def _unpack_ids(text: str) -> tuple[int, ...]:
    if not text:
        return ()
    arr = array.array("I")
    arr.frombytes(base64.b64decode(text))
    return tuple(arr)


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
    encryption: WireguardState = NO_ENCRYPTION
    load_balancer: LoadBalancerState = NO_LOAD_BALANCER
    foreign: frozenset[ForeignEntry] = frozenset()  # observed only: entries compile never makes
    http: frozenset[HttpPolicy] = frozenset()  # the L7 proxy's HTTP rules (Envoy's config)
    dns: frozenset[DnsPolicy] = frozenset()  # the DNS proxy's rules
    # toFQDNs selector text -> its identity: the names whose answers the DNS proxy learns IPs for
    # toFQDNs selector text (or a set of them, comma-joined) -> identity; and the DNS proxy's
    # settings under DNS_SETTINGS keys (present only when not the default)
    fqdn: FrozenMap[str, int] = field(default_factory=FrozenMap)
    # observed only, never compared: programs of others on meshctl's interfaces
    foreign_programs: tuple[ForeignProgram, ...] = field(default=(), compare=False)

    def canonical(self, policies: bool = True) -> dict[str, Any]:
        """A JSON-ready dict with sorted keys and lists: the input of the fingerprint. Without
        `policies`, the policy maps are left out (the state stores them apart, by digest)."""
        return {
            "node": self.node,
            "config": self.config.canonical(),
            "ipcache": [[str(p), e.identity, e.flags] for p, e in self.ipcache.items()],
            "endpoints": [_endpoint_row(str(a), e) for a, e in self.endpoints.items()],
            **({"policies": [
                [
                    ep,
                    [
                        [int(k.direction), k.identity, k.protocol, k.port, k.port_prefix, v.cookie, v.deny,
                         *([v.proxy_port] if v.proxy_port else [])]
                        for k, v in entries.items()
                    ],
                ]
                for ep, entries in self.policies.items()
            ]} if policies else {}),
            "attachments": sorted([str(a.endpoint), a.hook, a.build] for a in self.attachments),
            **({"encryption": self.encryption.canonical()} if self.encryption != NO_ENCRYPTION else {}),
            **({"load_balancer": self.load_balancer.canonical()} if self.load_balancer != NO_LOAD_BALANCER
               else {}),
            **({"foreign": _foreign_rows(self.foreign)} if self.foreign else {}),
            **({"http": http_rows(self.http)} if self.http else {}),
            **({"dns": dns_rows(self.dns)} if self.dns else {}),
            **({"fqdn": dict(self.fqdn.items())} if self.fqdn else {}),
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
                {IPv4Address(row[0]): EndpointEntry(*row[1:3], *map(bool, row[3:])) for row in d["endpoints"]}
            ),
            policies=FrozenMap(
                {
                    int(ep): FrozenMap(
                        {
                            PolicyKey(Direction(dr), ident, proto, port, pfx):
                                PolicyEntry(cookie, bool(deny), *proxy)
                            for dr, ident, proto, port, pfx, cookie, deny, *proxy in entries
                        }
                    )
                    for ep, entries in d["policies"]
                }
            ),
            attachments=frozenset(
                Attachment(IPv4Address(a), hook, build) for a, hook, build in d["attachments"]
            ),
            encryption=WireguardState.from_canonical(d["encryption"]) if "encryption" in d else NO_ENCRYPTION,
            load_balancer=(
                LoadBalancerState.from_canonical(d["load_balancer"])
                if "load_balancer" in d
                else NO_LOAD_BALANCER
            ),
            foreign=frozenset(ForeignEntry(m, int(o), k, v) for m, o, k, v in d.get("foreign", ())),
            http=frozenset(HttpPolicy.from_canonical(r) for r in d.get("http", ())),
            dns=frozenset(DnsPolicy.from_canonical(r) for r in d.get("dns", ())),
            fqdn=FrozenMap({str(k): int(v) for k, v in sorted(d.get("fqdn", {}).items())}),
        )

    def fingerprint(self, parts: Mapping[str, str] | None = None) -> str:
        """sha256 of the canonical state: plans record it to detect staleness.

        The bytes of json.dumps(self.canonical(), sort_keys=True, separators=(",", ":")) with
        each endpoint's policy map rows replaced by the sha256 of their canonical text (a Merkle
        tree: 50,000 endpoints share 8,000 maps, and an observed map known to the map cache has
        its digest without being decoded). The body is joined from canonical_parts(), whose big
        parts are formatted once per map object. `parts`: this state's canonical_parts() when the
        caller already has them (the plan's digests use them too).
        """
        if parts is None:
            parts = self.canonical_parts()
        body = "{" + ",".join(f'"{k}":{parts[k]}' for k in sorted(parts)) + "}"
        return "sha256:" + hashlib.sha256(body.encode()).hexdigest()

    def canonical_json(self) -> str:
        """The compact JSON of canonical() (sorted keys), joined from canonical_parts(): each map's
        text is made once per map object, and nothing is encoded twice (the apply journal writes
        two whole states per node)."""
        parts = self.canonical_parts()
        parts["policies"] = "[" + ",".join(
            f"[{ep},{policy_map_text(entries)}]" for ep, entries in self.policies.items()) + "]"
        return "{" + ",".join(f'"{k}":{parts[k]}' for k in sorted(parts)) + "}"

    def canonical_parts(self) -> dict[str, str]:
        """Top-level key of canonical() -> its compact JSON text (what fingerprint and the plan's
        per-component digests hash); absent keys (no encryption, no LB) are left out."""
        dumps = _dumps
        parts = {
            "node": dumps(self.node),
            "config": dumps(self.config.canonical()),
            "ipcache": self.ipcache.canonical_text(_ipcache_text),
            "endpoints": self.endpoints.canonical_text(_endpoints_text),
            "policies": "[" + ",".join(
                f'[{ep},"{policy_map_sha(entries)}"]' for ep, entries in self.policies.items()
            ) + "]",
            "attachments": attachments_text(self.attachments),
        }
        if self.encryption != NO_ENCRYPTION:
            parts["encryption"] = dumps(self.encryption.canonical())
        if self.load_balancer != NO_LOAD_BALANCER:
            parts["load_balancer"] = dumps(self.load_balancer.canonical())
        if self.foreign:
            parts["foreign"] = dumps(_foreign_rows(self.foreign))
        if self.http:
            parts["http"] = dumps(http_rows(self.http))
        if self.dns:
            parts["dns"] = dumps(dns_rows(self.dns))
        if self.fqdn:
            parts["fqdn"] = dumps(dict(self.fqdn.items()))
        return parts


_ATTACHMENT_TEXTS: dict[int, tuple[frozenset[Attachment], str]] = {}  # id -> (set, canonical text)


def attachments_text(attachments: frozenset[Attachment], known: str | None = None) -> str:
    """The canonical text of a set of attachments, once per set object; `known`: the text, from
    one who has it (an incremental plan's baseline)."""
    hit = _ATTACHMENT_TEXTS.get(id(attachments))
    if hit is None or hit[0] is not attachments:
        if len(_ATTACHMENT_TEXTS) >= 4096:
            _ATTACHMENT_TEXTS.clear()
        text = known if known is not None else _dumps(
            sorted([str(a.endpoint), a.hook, a.build] for a in attachments))
        hit = _ATTACHMENT_TEXTS[id(attachments)] = (attachments, text)
    return hit[1]


def http_rows(http: frozenset[HttpPolicy]) -> list[list[Any]]:
    return [p.canonical() for p in sorted(http)]


def dns_rows(dns: frozenset[DnsPolicy]) -> list[list[Any]]:
    return [p.canonical() for p in sorted(dns)]


def _foreign_rows(foreign: frozenset[ForeignEntry]) -> list[list[Any]]:
    return [e.canonical() for e in sorted(foreign)]


def _dumps(value: Any) -> str:
    return json.dumps(value, sort_keys=True, separators=(",", ":"))


def _ipcache_text(ipcache: Mapping[IPv4Network, IpcacheEntry]) -> str:
    # str() of an address never needs JSON escaping: an f-string gives json.dumps' bytes
    return "[" + ",".join(f'["{p}",{e.identity},{e.flags}]' for p, e in ipcache.items()) + "]"


def _endpoint_row(addr: str, e: EndpointEntry) -> list[Any]:
    """[addr, id, identity, enforce in, enforce eg] and, only when audited, [audit in, audit eg]:
    states without staged policies keep the fingerprints they always had."""
    row: list[Any] = [addr, e.endpoint_id, e.identity, e.enforce_ingress, e.enforce_egress]
    if e.audit_ingress or e.audit_egress:
        row += [e.audit_ingress, e.audit_egress]
    return row


def _endpoints_text(endpoints: Mapping[IPv4Address, EndpointEntry]) -> str:
    b = ("false", "true")
    return "[" + ",".join(
        f'["{a}",{e.endpoint_id},{e.identity},{b[e.enforce_ingress]},{b[e.enforce_egress]}'
        + (f",{b[e.audit_ingress]},{b[e.audit_egress]}]" if e.audit_ingress or e.audit_egress else "]")
        for a, e in endpoints.items()
    ) + "]"


_ROW_HEAD: dict[int, tuple[Any, str]] = {}  # id(PolicyKey) -> (key, "[d,identity,proto,port,prefix,")
_ROW_TAIL: dict[int, tuple[Any, str]] = {}  # id(PolicyEntry) -> (entry, "cookie,deny]")
_MEMO_LIMIT = 1_000_000


def policy_map_text(entries: Mapping[PolicyKey, PolicyEntry]) -> str:
    """Canonical JSON of one policy map (its part of canonical()), made once per FrozenMap.

    Equal texts mean equal maps. Keys and values are shared objects (interned), so each row
    half is formatted once per process. Row memo entries keep their object alive: an id is
    never reused while memoized.
    """
    if isinstance(entries, FrozenMap):
        return entries.canonical_text(_policy_text)
    return _policy_text(entries)


_MAP_SHAS: dict[int, tuple[Any, str]] = {}  # id(map) -> (map, sha): the map is kept alive


def policy_map_sha(entries: Mapping[PolicyKey, PolicyEntry]) -> str:
    """sha256 (hex) of a policy map's canonical text, once per map object; a map that knows it
    (an observed map the map cache recognised: `text_sha`) is not decoded for it."""
    known = getattr(entries, "text_sha", None)
    if known is not None:
        return str(known)
    if not isinstance(entries, FrozenMap):  # not immutable: no memo
        return hashlib.sha256(policy_map_text(entries).encode()).hexdigest()
    hit = _MAP_SHAS.get(id(entries))
    if hit is None or hit[0] is not entries:
        if len(_MAP_SHAS) >= _MEMO_LIMIT:
            _MAP_SHAS.clear()
        sha = hashlib.sha256(policy_map_text(entries).encode()).hexdigest()
        hit = _MAP_SHAS[id(entries)] = (entries, sha)
    return hit[1]


def _policy_text(entries: Mapping[PolicyKey, PolicyEntry]) -> str:
    heads, tails = _ROW_HEAD, _ROW_TAIL
    if len(heads) >= _MEMO_LIMIT or len(tails) >= _MEMO_LIMIT:
        heads.clear()
        tails.clear()
    rows = []
    for k, v in entries.items():
        h = heads.get(id(k))
        if h is None or h[0] is not k:
            h = heads[id(k)] = (k, f"[{int(k.direction)},{k.identity},{k.protocol},{k.port},{k.port_prefix},")
        t = tails.get(id(v))
        if t is None or t[0] is not v:
            t = tails[id(v)] = (v, v.row_tail)
        rows.append(h[1] + t[1])
    return "[" + ",".join(rows) + "]"
