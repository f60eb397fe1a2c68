"""Typed pinned maps: convert between the C structs and the plain values of meshctl.nodestate.

`encode_*` / `decode_*` are pure (bytes in, values out) so observe can parse raw dumps without
the kernel; the `*Map` classes wrap a pinned map and use them. Every struct is built from zero
(ctypes zero-fills), so pad bytes are always zero and keys compare byte for byte.

Decoding is lossless: the `*_table` decoders return the typed entries AND, as ForeignEntry
values, every entry whose bytes do not re-encode from its decoded value (a form the compiler
never writes). Nothing is normalised into a compiled twin: what the kernel holds is what the
plan sees.
"""

from __future__ import annotations

import ctypes
import struct
from collections.abc import Collection, Iterable, Mapping
from dataclasses import dataclass
from ipaddress import IPv4Address, IPv4Network
from pathlib import Path
from typing import Self

from meshctl.dataplane import structs as S
from meshctl.dataplane.libbpf import BPF_F_NO_PREALLOC, BPF_MAP_TYPE_LPM_TRIE, Map, num_possible_cpus
from meshctl.errors import CompileError, DataplaneError
from meshctl.nodestate import (
    DatapathConfig,
    Direction,
    EndpointEntry,
    ForeignEntry,
    FrozenMap,
    IpcacheEntry,
    PolicyEntry,
    PolicyKey,
    intern_policy_entry,
    intern_policy_key,
)

CT_TIMEOUTS = ("ct_timeout_tcp_s", "ct_timeout_non_tcp_s", "ct_timeout_syn_s", "ct_timeout_close_s")

U32 = struct.Struct("<I")


def be32(ip: IPv4Address) -> int:
    """A __be32 field value: the u32 whose memory bytes are the address in network order."""
    return int.from_bytes(ip.packed, "little")


def from_be32(value: int) -> IPv4Address:
    return IPv4Address(int.from_bytes(value.to_bytes(4, "little"), "big"))


def be16(port: int) -> int:
    return int.from_bytes(port.to_bytes(2, "big"), "little")


def from_be16(value: int) -> int:
    return int.from_bytes(value.to_bytes(2, "little"), "big")


# ---------------------------------------------------------------- ipcache


def encode_ipcache(prefix: IPv4Network, entry: IpcacheEntry) -> tuple[bytes, bytes]:
    key = S.IpcacheKey(prefixlen=prefix.prefixlen, addr_be=be32(prefix.network_address))
    return bytes(key), bytes(S.IpcacheValue(identity=entry.identity, flags=entry.flags))


IPCACHE_KEY = struct.Struct("<I4s")  # struct ipcache_key: prefixlen, addr (network order)
IPCACHE_VALUE = struct.Struct("<II")


def decode_ipcache(key: bytes, value: bytes) -> tuple[IPv4Network, IpcacheEntry]:
    # struct.unpack rather than ctypes: observe decodes up to IPCACHE_MAP_SIZE of these
    prefixlen, addr = IPCACHE_KEY.unpack(key)
    net = IPv4Network((int.from_bytes(addr, "big"), prefixlen), strict=False)
    return net, IpcacheEntry(*IPCACHE_VALUE.unpack(value))


Foreign = list[ForeignEntry]
_IPCACHE_TABLES: dict[bytes, tuple[FrozenMap[IPv4Network, IpcacheEntry], Foreign]] = {}


def foreign_entry(map_name: str, key: bytes, value: bytes, owner: int = 0) -> ForeignEntry:
    return ForeignEntry(map_name, owner, key.hex(), value.hex())


def ipcache_key_canonical(key: bytes) -> bool:
    """A prefix length the trie accepts and no address bit beyond it (what encode writes)."""
    prefixlen, addr = IPCACHE_KEY.unpack(key)
    return prefixlen <= 32 and int.from_bytes(addr, "big") & ((1 << (32 - prefixlen)) - 1) == 0


def decode_ipcache_table(
    items: list[tuple[bytes, bytes]],
) -> tuple[FrozenMap[IPv4Network, IpcacheEntry], Foreign]:
    """The whole ipcache and its foreign entries (keys with host bits set); nodes usually hold
    the same one, so equal dumps are decoded once."""
    raw = b"".join(k + v for k, v in items)
    hit = _IPCACHE_TABLES.get(raw)
    if hit is None:
        if len(_IPCACHE_TABLES) >= 64:
            _IPCACHE_TABLES.clear()
        typed: dict[IPv4Network, IpcacheEntry] = {}
        foreign: Foreign = []
        for k, v in items:
            if ipcache_key_canonical(k):
                net, entry = decode_ipcache(k, v)
                typed[net] = entry
            else:
                foreign.append(foreign_entry("ipcache", k, v))
        hit = _IPCACHE_TABLES[raw] = (FrozenMap(typed), foreign)
    return hit


# ---------------------------------------------------------------- endpoints


def encode_endpoint(addr: IPv4Address, entry: EndpointEntry) -> tuple[bytes, bytes]:
    flags = endpoint_flags(entry)
    value = S.EndpointValue(endpoint_id=entry.endpoint_id, identity=entry.identity, flags=flags)
    return bytes(S.EndpointKey(addr_be=be32(addr))), bytes(value)


def decode_endpoint(key: bytes, value: bytes) -> tuple[IPv4Address, EndpointEntry]:
    k, v = S.EndpointKey.from_buffer_copy(key), S.EndpointValue.from_buffer_copy(value)
    return from_be32(k.addr_be), endpoint_entry(v.endpoint_id, v.identity, v.flags)


_ENDPOINT_FLAGS = (
    S.EndpointFlags.ENFORCE_INGRESS, S.EndpointFlags.ENFORCE_EGRESS,
    S.EndpointFlags.AUDIT_INGRESS, S.EndpointFlags.AUDIT_EGRESS,
)
KNOWN_ENDPOINT_FLAGS = int(sum(_ENDPOINT_FLAGS))


def endpoint_flags(entry: EndpointEntry) -> int:
    wanted = (entry.enforce_ingress, entry.enforce_egress, entry.audit_ingress, entry.audit_egress)
    return sum(int(bit) for bit, on in zip(_ENDPOINT_FLAGS, wanted, strict=True) if on)


def endpoint_entry(endpoint_id: int, identity: int, flags: int) -> EndpointEntry:
    """struct endpoint_value's fields -> EndpointEntry (flags ENDPOINT_F_* known to the caller)."""
    ing, eg, a_ing, a_eg = (bool(flags & bit) for bit in _ENDPOINT_FLAGS)
    return EndpointEntry(endpoint_id, identity, ing, eg, a_ing, a_eg)


ENDPOINT_VALUE = struct.Struct("<III")  # struct endpoint_value: endpoint_id, identity, flags


def decode_endpoint_table(
    items: list[tuple[bytes, bytes]],
) -> tuple[FrozenMap[IPv4Address, EndpointEntry], Foreign]:
    """The whole endpoints map: `FrozenMap(dict(decode_endpoint(k, v) for ...))`, made with
    struct and sorted by address as an int (IPv4Address's own order) instead of by __lt__;
    entries with flag bits the datapath does not define are foreign."""
    rows = {}
    foreign = []
    for key, value in items:
        endpoint_id, identity, flags = ENDPOINT_VALUE.unpack(value)
        if flags & ~KNOWN_ENDPOINT_FLAGS:
            foreign.append(foreign_entry("endpoints", key, value))
            continue
        entry = endpoint_entry(endpoint_id, identity, flags)
        rows[int.from_bytes(key, "big")] = entry  # the key's bytes are the address, network order
    return FrozenMap.from_sorted([(IPv4Address(addr), rows[addr]) for addr in sorted(rows)]), foreign


# ---------------------------------------------------------------- policy


def encode_policy(key: PolicyKey, entry: PolicyEntry) -> tuple[bytes, bytes]:
    k = S.PolicyKey(
        prefixlen=key.lpm_prefixlen,
        identity=key.identity,
        egress=int(key.direction),
        protocol=key.protocol,
        dport_be=be16(key.port),
    )
    v = S.PolicyValue(cookie=entry.cookie, flags=int(S.PolicyFlags.DENY) if entry.deny else 0,
                      proxy_port=entry.proxy_port)
    return bytes(k), bytes(v)


def decode_policy(key: bytes, value: bytes) -> tuple[PolicyKey, PolicyEntry]:
    """One entry in the form encode_policy writes; ValueError for any other form (see
    decode_policy_dump, which keeps such entries as foreign)."""
    t = policy_key_fields(key)
    v = S.PolicyValue.from_buffer_copy(value)
    if t is None or v.flags & ~int(S.PolicyFlags.DENY) or v.pad:
        raise ValueError(f"policy entry {key.hex()}={value.hex()} is not in a form meshctl writes")
    return (PolicyKey(Direction(t[0]), *t[1:]),
            PolicyEntry(v.cookie, bool(v.flags & S.PolicyFlags.DENY), v.proxy_port))


POLICY_KEY_SIZE = 12  # sizeof(struct policy_key); checked against structs.py at import below
POLICY_VALUE_SIZE = 8
_POLICY_KEY_RAW = struct.Struct("<IIBB2s")
# raw key -> (sort rank, interned key, row head), or _FOREIGN_KEY for a key compile never writes
_RAW_KEYS: dict[bytes, tuple[int, PolicyKey | None, str]] = {}
_RAW_VALUES: dict[bytes, tuple[PolicyEntry | None, str]] = {}  # raw value -> (interned entry, row tail)
PolicyTable = tuple[FrozenMap[PolicyKey, PolicyEntry], tuple[tuple[bytes, bytes], ...]]
_TABLES: dict[tuple[bytes, bytes], PolicyTable] = {}
_CACHE_LIMIT = 1_000_000
_FOREIGN_KEY: tuple[int, PolicyKey | None, str] = (-1, None, "")
_FOREIGN_VALUE: tuple[PolicyEntry | None, str] = (None, "")


def policy_key_fields(raw: bytes) -> tuple[int, int, int, int, int] | None:
    """(direction, identity, protocol, port, port_prefix) of a raw key in the exact form
    encode_policy writes, else None: prefix 40 with protocol and port zero (any protocol),
    or 48..64 with a protocol and no port bit beyond the prefix; direction 0 or 1."""
    prefixlen, identity, egress, protocol, dport = _POLICY_KEY_RAW.unpack(raw)
    port = int.from_bytes(dport, "big")
    if egress > 1:
        return None
    if prefixlen == S.POLICY_PREFIX_STATIC and protocol == 0 and port == 0:
        return (egress, identity, 0, 0, 0)
    if S.POLICY_PREFIX_PROTO <= prefixlen <= S.POLICY_PREFIX_FULL and protocol:
        port_prefix = prefixlen - S.POLICY_PREFIX_PROTO
        if port & ((1 << (16 - port_prefix)) - 1) == 0:
            return (egress, identity, protocol, port, port_prefix)
    return None


def _raw_key(raw: bytes) -> tuple[int, PolicyKey | None, str]:
    """Decode one never-seen raw key: its interned PolicyKey, an int that sorts like it and the
    head of its canonical row (nodestate.policy_map_text's format); _FOREIGN_KEY when the
    compiler never writes a key of that form."""
    t = policy_key_fields(raw)
    if len(_RAW_KEYS) >= _CACHE_LIMIT:
        _RAW_KEYS.clear()
    if t is None:
        _RAW_KEYS[raw] = _FOREIGN_KEY
        return _FOREIGN_KEY
    rank = (((t[0] << 32 | t[1]) << 8 | t[2]) << 16 | t[3]) << 5 | t[4]  # field order of PolicyKey
    key = intern_policy_key(t)
    head = f"[{int(key.direction)},{key.identity},{key.protocol},{key.port},{key.port_prefix},"
    out = _RAW_KEYS[raw] = (rank, key, head)
    return out


def _raw_value(raw: bytes) -> tuple[PolicyEntry | None, str]:
    """As _raw_key for a value: _FOREIGN_VALUE for unknown flag bits or a non-zero pad."""
    cookie, word = IPCACHE_VALUE.unpack(raw[:8])  # u32 cookie; u8 flags, u8 pad, u16 proxy_port
    if len(_RAW_VALUES) >= _CACHE_LIMIT:
        _RAW_VALUES.clear()
    if word & 0xFFFF & ~int(S.PolicyFlags.DENY):
        _RAW_VALUES[raw] = _FOREIGN_VALUE
        return _FOREIGN_VALUE
    entry = intern_policy_entry(cookie, bool(word & S.PolicyFlags.DENY), word >> 16)
    out = _RAW_VALUES[raw] = (entry, entry.row_tail)
    return out


def _chunks(buf: bytes, size: int) -> list[bytes]:
    return [buf[i:i + size] for i in range(0, len(buf), size)]


def decode_policy_table(keys: bytes, values: bytes) -> FrozenMap[PolicyKey, PolicyEntry]:
    """The typed entries of one dump (decode_policy_dump without its foreign entries): for
    dumps known to hold none (meshctl.lazypolicy)."""
    return decode_policy_dump(keys, values)[0]


def decode_policy_dump(keys: bytes, values: bytes) -> PolicyTable:
    """A whole inner policy map from one batch dump (keys and values concatenated): its typed
    entries, and the raw (key, value) pairs of the entries compile never writes.

    Observe reads ~a million entries at scale, so this is the hot path: raw keys and values
    are decoded once per process into interned objects (with their halves of the canonical
    row), entries are sorted by an int rank instead of by dataclass comparison, the map's
    canonical text (which the plan's fingerprints always need) is joined in the same pass, and
    a table with the same bytes (the same policy on another endpoint or node) is decoded once.
    """
    cached = _TABLES.get((keys, values))
    if cached is not None:
        return cached
    known_k, known_v = _RAW_KEYS, _RAW_VALUES
    raw_ks, raw_vs = _chunks(keys, POLICY_KEY_SIZE), _chunks(values, POLICY_VALUE_SIZE)
    ks = [known_k.get(k) or _raw_key(k) for k in raw_ks]
    vs = [known_v.get(v) or _raw_value(v) for v in raw_vs]
    if len(ks) != len(vs):
        raise ValueError(f"policy dump of {len(ks)} keys and {len(vs)} values")
    foreign: tuple[tuple[bytes, bytes], ...] = ()
    if any(k[1] is None for k in ks) or any(v[0] is None for v in vs):
        bad = [i for i in range(len(ks)) if ks[i][1] is None or vs[i][0] is None]
        foreign = tuple((raw_ks[i], raw_vs[i]) for i in bad)
        drop = set(bad)
        ks = [k for i, k in enumerate(ks) if i not in drop]
        vs = [v for i, v in enumerate(vs) if i not in drop]
    ranks = [k[0] for k in ks]
    order = sorted(range(len(ks)), key=ranks.__getitem__)
    table: FrozenMap[PolicyKey, PolicyEntry] = FrozenMap.from_sorted(
        [(ks[i][1], vs[i][0]) for i in order]  # type: ignore[misc]  # None only in foreign rows
    )
    text = "[" + ",".join([ks[i][2] + vs[i][1] for i in order]) + "]"
    table.canonical_text(lambda _m: text)
    if len(_TABLES) >= 4096:
        _TABLES.clear()
    out = _TABLES[(keys, values)] = (table, foreign)
    return out


# ---------------------------------------------------------------- config


def encode_config(cfg: DatapathConfig) -> bytes:
    return bytes(
        S.DatapathConfig(
            flags=(int(S.ConfigFlags.IPV6_PASS) if cfg.ipv6_pass else 0)
            | (int(S.ConfigFlags.PROXY) if cfg.proxy else 0),
            ct_timeout_tcp_s=cfg.ct_timeout_tcp_s,
            ct_timeout_non_tcp_s=cfg.ct_timeout_non_tcp_s,
            ct_timeout_syn_s=cfg.ct_timeout_syn_s,
            ct_timeout_close_s=cfg.ct_timeout_close_s,
        )
    )


def decode_config(value: bytes | None) -> DatapathConfig:
    """The config exactly as stored (a zero timeout stays zero: the datapath then uses its
    default, but the bytes differ from what apply writes). None (no config map) decodes as the
    defaults."""
    if value is None:
        return DatapathConfig()
    c = S.DatapathConfig.from_buffer_copy(value)
    timeouts = {name: getattr(c, name) for name in CT_TIMEOUTS}
    return DatapathConfig(ipv6_pass=bool(c.flags & S.ConfigFlags.IPV6_PASS),
                          proxy=bool(c.flags & S.ConfigFlags.PROXY), **timeouts)


def decode_config_entry(value: bytes | None) -> tuple[DatapathConfig, Foreign]:
    """decode_config, plus the entry as foreign when its bytes hold more than that (unknown
    flag bits, a non-zero pad)."""
    cfg = decode_config(value)
    if value is None or encode_config(cfg) == value:
        return cfg, []
    return cfg, [foreign_entry("config", U32.pack(0), value)]


# ---------------------------------------------------------------- metrics and conntrack


@dataclass(frozen=True, order=True)
class MetricKey:
    verdict: int
    reason: int
    direction: int


@dataclass(frozen=True)
class MetricTotal:
    packets: int
    bytes: int


def decode_metrics(key: bytes, value: bytes, ncpus: int) -> tuple[MetricKey, MetricTotal]:
    k = S.MetricsKey.from_buffer_copy(key)
    per_cpu = (S.MetricsValue * ncpus).from_buffer_copy(value)
    return MetricKey(k.verdict, k.reason, k.direction), MetricTotal(
        sum(v.packets for v in per_cpu), sum(v.bytes for v in per_cpu)
    )


@dataclass(frozen=True)
class CtEntry:
    """One conntrack entry, host order."""

    saddr: IPv4Address
    daddr: IPv4Address
    sport: int
    dport: int
    protocol: int
    direction: Direction
    expires_ns: int
    packets: int
    bytes: int
    cookie: int
    flags: int


def decode_ct(key: bytes, value: bytes) -> CtEntry:
    k, v = S.CtKey.from_buffer_copy(key), S.CtValue.from_buffer_copy(value)
    return CtEntry(from_be32(k.saddr_be), from_be32(k.daddr_be), from_be16(k.sport_be),
                   from_be16(k.dport_be), k.protocol, Direction(k.direction), v.expires_ns,
                   v.packets, v.bytes, v.cookie, v.flags)


# ---------------------------------------------------------------- typed pinned maps


class _Typed:
    """A pinned map owned by this wrapper (context manager)."""

    map_name = ""

    def __init__(self, m: Map) -> None:
        self.map = m

    @classmethod
    def from_dir(cls, pin_dir: Path) -> Self:
        return cls(Map.from_pin(pin_dir / cls.map_name))

    def close(self) -> None:
        self.map.close()

    def __enter__(self) -> Self:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()


class IpcacheMap(_Typed):
    map_name = "ipcache"

    def read(self) -> FrozenMap[IPv4Network, IpcacheEntry]:
        return FrozenMap(dict(decode_ipcache(k, v) for k, v in self.map.items()))

    def get(self, prefix: IPv4Network) -> IpcacheEntry | None:
        """The entry of the longest prefix that holds `prefix` (the trie's lookup: not exact)."""
        key, _ = encode_ipcache(prefix, IpcacheEntry(0))
        value = self.map.lookup(key)
        return None if value is None else IpcacheEntry(*IPCACHE_VALUE.unpack(value))

    def upsert(self, entries: Mapping[IPv4Network, IpcacheEntry]) -> None:
        pairs = [encode_ipcache(p, e) for p, e in entries.items()]
        self.map.update_batch([k for k, _ in pairs], [v for _, v in pairs])

    def remove(self, prefixes: Iterable[IPv4Network]) -> None:
        self.map.delete_batch([encode_ipcache(p, IpcacheEntry(0))[0] for p in prefixes])


class EndpointsMap(_Typed):
    map_name = "endpoints"

    def read(self) -> FrozenMap[IPv4Address, EndpointEntry]:
        return FrozenMap(dict(decode_endpoint(k, v) for k, v in self.map.items()))

    def upsert(self, entries: Mapping[IPv4Address, EndpointEntry]) -> None:
        pairs = [encode_endpoint(a, e) for a, e in entries.items()]
        self.map.update_batch([k for k, _ in pairs], [v for _, v in pairs])

    def remove(self, addrs: Iterable[IPv4Address]) -> None:
        self.map.delete_batch([bytes(S.EndpointKey(addr_be=be32(a))) for a in addrs])


SWAP_CHUNK = 256  # inner maps (fds) built before one outer batch update

# Inner policy maps must match the template of policy_maps (bpf/lib/policy.h).
INNER_POLICY_MAP = dict(
    map_type=BPF_MAP_TYPE_LPM_TRIE,
    key_size=ctypes.sizeof(S.PolicyKey),
    value_size=ctypes.sizeof(S.PolicyValue),
    max_entries=S.POLICY_MAP_SIZE,
    flags=BPF_F_NO_PREALLOC,
)


class PolicyMaps(_Typed):
    """policy_maps: endpoint_id -> inner LPM map of that endpoint's policy entries."""

    map_name = "policy_maps"

    def endpoint_ids(self) -> list[int]:
        return sorted(U32.unpack(k)[0] for k in self.map)

    def read_raw(self) -> dict[int, list[tuple[bytes, bytes]]]:
        """endpoint_id -> raw inner entries (each inner map opened by id, read, closed)."""
        out: dict[int, list[tuple[bytes, bytes]]] = {}
        for ep in self.endpoint_ids():
            raw_id = self.map.lookup(U32.pack(ep))
            if raw_id is None:
                continue  # removed while we read
            with Map.from_id(U32.unpack(raw_id)[0]) as inner:
                out[ep] = inner.items()
        return out

    def read_dumps(self, only: Collection[int] | None = None) -> dict[int, tuple[bytes, bytes]]:
        """endpoint_id -> (keys, values) dump of its inner map (of the endpoints in `only`, when
        given); an inner map shared by several endpoints (same policy) is read once and its dump
        object shared."""
        if only is None:  # map of maps: per entry, values are inner map ids
            outer = dict(self.map.lookup_batch())
        else:
            found = ((U32.pack(ep), self.map.lookup(U32.pack(ep))) for ep in only)
            outer = {k: v for k, v in found if v is not None}
        dumps: dict[int, tuple[bytes, bytes]] = {}
        out: dict[int, tuple[bytes, bytes]] = {}
        for raw_ep, raw_id in sorted(outer.items(), key=lambda kv: U32.unpack(kv[0])[0]):
            inner_id = U32.unpack(raw_id)[0]
            dump = dumps.get(inner_id)
            if dump is None:
                try:
                    inner = Map.from_id(inner_id)
                except DataplaneError:
                    continue  # replaced while we read: the outer entry now names another map
                with inner:
                    dump = dumps[inner_id] = inner.dump()
            out[U32.unpack(raw_ep)[0]] = dump
        return out

    def read(self) -> FrozenMap[int, FrozenMap[PolicyKey, PolicyEntry]]:
        return FrozenMap({ep: decode_policy_table(*d) for ep, d in sorted(self.read_dumps().items())})

    def swap(self, endpoint_id: int, entries: Mapping[PolicyKey, PolicyEntry]) -> None:
        """Fill a NEW inner map completely, then point the endpoint at it in one update.

        The datapath sees either the whole old policy or the whole new one, never a mix.
        """
        self.swap_many({endpoint_id: entries})

    def swap_many(self, policies: Mapping[int, Mapping[PolicyKey, PolicyEntry]]) -> None:
        """swap() for many endpoints with one outer batch update per SWAP_CHUNK endpoints.

        Endpoints with identical policy (the compiler shares one map per identity; equal
        FrozenMaps compare equal) get ONE new inner map, pointed at from several outer slots:
        the kernel allows an inner map in many slots of a HASH_OF_MAPS, inner maps are never
        written after they are published, and each endpoint still switches in one update.
        Every update of a map of maps waits for an RCU grace period (~10 ms here) so no program
        still uses the old inner map when it returns; a batch update waits once.
        """
        for ep, entries in policies.items():
            if len(entries) > S.POLICY_MAP_SIZE:
                raise CompileError(f"endpoint {ep}: {len(entries)} policy entries exceed "
                                   f"the map capacity {S.POLICY_MAP_SIZE}")
        items = list(policies.items())
        made: dict[object, int] = {}  # content (or object id) -> id of the inner map holding it
        for start in range(0, len(items), SWAP_CHUNK):
            chunk = items[start:start + SWAP_CHUNK]
            opened: dict[int, Map] = {}  # inner map id -> fd open for this chunk's outer update
            try:
                fds = []
                for ep, entries in chunk:
                    content: object = entries if isinstance(entries, FrozenMap) else ("ep", ep)
                    inner_id = made.get(content)
                    if inner_id is None:
                        inner = Map.create(name=f"mc_pol_{ep}"[:15], **INNER_POLICY_MAP)  # type: ignore[arg-type]
                        opened[inner.id] = inner
                        pairs = [encode_policy(k, v) for k, v in entries.items()]
                        inner.update_batch([k for k, _ in pairs], [v for _, v in pairs])
                        inner_id = made[content] = inner.id
                    elif inner_id not in opened:
                        opened[inner_id] = Map.from_id(inner_id)  # held by an earlier chunk's slot
                    fds.append(opened[inner_id].fd)
                self.map.update_batch([U32.pack(ep) for ep, _ in chunk], [U32.pack(fd) for fd in fds])
            finally:
                for m in opened.values():
                    m.close()  # the outer map holds its own reference

    def remove(self, endpoint_ids: Iterable[int]) -> None:
        self.map.delete_batch([U32.pack(ep) for ep in endpoint_ids])


class ConfigMap(_Typed):
    map_name = "config"

    def read(self) -> DatapathConfig:
        return decode_config(self.map.lookup(U32.pack(0)))

    def write(self, cfg: DatapathConfig) -> None:
        self.map.update(U32.pack(0), encode_config(cfg))


class MetricsMap(_Typed):
    """Per-CPU counters, summed over CPUs."""

    map_name = "metrics"

    @classmethod
    def open(cls, cluster: str, node: str) -> MetricsMap | None:
        """The node's pinned metrics map, None when the node has no datapath loaded."""
        from meshctl.dataplane.node import node_pin_dir

        path = node_pin_dir(cluster, node) / cls.map_name
        return cls(Map.from_pin(path)) if path.exists() else None

    def items(self) -> list[tuple[MetricKey, MetricTotal]]:
        ncpus = num_possible_cpus()
        return sorted(decode_metrics(k, v, ncpus) for k, v in self.map.items())

    def read(self) -> dict[MetricKey, MetricTotal]:
        return dict(self.items())


class CtMap(_Typed):
    map_name = "ct"

    def read(self) -> list[CtEntry]:
        return [decode_ct(k, v) for k, v in self.map.items()]

    def flush(self) -> int:
        """Forget every connection; returns how many were removed."""
        keys = list(self.map.keys())
        self.map.delete_batch(keys)
        return len(keys)


assert ctypes.sizeof(S.PolicyKey) == POLICY_KEY_SIZE and ctypes.sizeof(S.PolicyValue) == POLICY_VALUE_SIZE
