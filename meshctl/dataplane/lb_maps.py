"""The load balancer's pinned maps (bpf/lib/lb.h) <-> LoadBalancerState.

encode_* / decode_* are pure; `read_raw` + `decode_state` are observe's read and parse halves;
`write` drives the maps from the observed state to a target, make-before-break: backends first,
then each service's slots / Maglev table (a new inner table swapped in by one pointer update),
then the service entries; removals last (services, their slots and tables, then backends). So a
packet never meets a slot naming a missing backend.

The settings string (mode, algorithm, table size, seed) lives in a small pinned ARRAY map
`lb_settings` made here, so observe reads back what the node was built with. A change of the
settings flushes the flow and affinity state (`lb_flows`, `lb_affinity`) once the new services
are in place: an established flow otherwise keeps its backend and its SNAT/DSR choice, so the
old mode or algorithm would live on in it. That is the disturbance the plan's replace warns of.
"""

from __future__ import annotations

import hashlib
import struct
from dataclasses import dataclass, field
from ipaddress import IPv4Address
from pathlib import Path

from meshctl.dataplane import structs as S
from meshctl.dataplane.libbpf import BPF_MAP_TYPE_ARRAY, Map
from meshctl.dataplane.maps import be16, be32, foreign_entry, from_be16, from_be32
from meshctl.nodestate import (
    ForeignEntry,
    FrozenMap,
    LbBackendEntry,
    LbFrontend,
    LbService,
    LoadBalancerState,
)

LB_MAP_NAMES = ("lb_services", "lb_backends", "lb_slots", "lb_maglev", "lb_flows", "lb_affinity", "lb_config")
SETTINGS_MAP = "lb_settings"
FLOW_STATE_MAPS = ("lb_flows", "lb_affinity")  # what a settings change flushes
SETTINGS_SIZE = 256
BPF_F_INNER_MAP = 1 << 12
U32 = struct.Struct("<I")
Items = list[tuple[bytes, bytes]]


# ---------------------------------------------------------------- pure encoding


def encode_frontend(f: LbFrontend) -> bytes:
    return bytes(S.LbServiceKey(addr_be=be32(f.address), dport_be=be16(f.port), protocol=f.protocol))


def decode_frontend(key: bytes) -> LbFrontend:
    k = S.LbServiceKey.from_buffer_copy(key)
    return LbFrontend(from_be32(k.addr_be), from_be16(k.dport_be), k.protocol)


def service_flags(s: LbService) -> int:
    flags = 0
    if s.maglev:
        flags |= S.LbServiceFlags.MAGLEV
    if s.affinity_timeout_s:
        flags |= S.LbServiceFlags.AFFINITY
    if s.external:
        flags |= S.LbServiceFlags.EXTERNAL
    if s.dsr:
        flags |= S.LbServiceFlags.DSR
    return int(flags)


def encode_service(s: LbService) -> bytes:
    return bytes(S.LbServiceValue(service_id=s.service_id, backend_count=len(s.backends),
                                  maglev_size=len(s.maglev), affinity_timeout_s=s.affinity_timeout_s,
                                  flags=service_flags(s)))


def encode_backend(b: LbBackendEntry) -> bytes:
    return bytes(S.LbBackend(addr_be=be32(b.address), port_be=be16(b.port), protocol=b.protocol,
                             flags=int(S.LbBackendFlags.LOCAL) if b.local else 0))


def decode_backend(value: bytes) -> LbBackendEntry:
    v = S.LbBackend.from_buffer_copy(value)
    return LbBackendEntry(from_be32(v.addr_be), from_be16(v.port_be), v.protocol,
                          bool(v.flags & S.LbBackendFlags.LOCAL))


def encode_slot(service_id: int, slot: int) -> bytes:
    return bytes(S.LbSlotKey(service_id=service_id, slot=slot))


def encode_node_config(state: LoadBalancerState) -> bytes:
    addr = be32(state.snat_address) if state.snat_address else 0
    return bytes(S.LbNodeConfig(snat_addr_be=addr, flags=S.LB_CFG_F_ENABLED if state.enabled else 0))


@dataclass
class RawLb:
    """What observe reads from the LB maps: bytes, no interpretation."""

    interface: str = ""
    config: bytes | None = None
    settings: bytes | None = None
    services: Items = field(default_factory=list)
    backends: Items = field(default_factory=list)
    slots: Items = field(default_factory=list)
    maglev: dict[int, bytes] = field(default_factory=dict)  # service_id -> packed u32 table


def decode_state(raw: RawLb | None) -> LoadBalancerState:
    """The typed state alone (decode_lb without its foreign entries)."""
    return decode_lb(raw)[0]


def decode_lb(raw: RawLb | None) -> tuple[LoadBalancerState, list[ForeignEntry]]:
    """Parse, losslessly: the typed state, plus every entry that does not re-encode from it as
    a ForeignEntry (a service value that disagrees with its slots or table, unknown flag bits,
    a non-zero pad, a slot or Maglev table no service uses, node settings of a disabled load
    balancer). A node without LB maps or never enabled parses as the empty LoadBalancerState."""
    if raw is None:
        return LoadBalancerState(), []
    foreign: list[ForeignEntry] = []
    cfg = S.LbNodeConfig.from_buffer_copy(raw.config) if raw.config else S.LbNodeConfig()
    settings_raw = raw.settings or b""
    settings = settings_raw.rstrip(b"\0").decode(errors="replace")
    if raw.settings is not None and settings_bytes(settings) != raw.settings:
        foreign.append(foreign_entry(SETTINGS_MAP, U32.pack(0), raw.settings))
    slots: dict[int, dict[int, int]] = {}
    slot_raw: dict[tuple[int, int], tuple[bytes, bytes]] = {}
    for k, v in raw.slots:
        sk = S.LbSlotKey.from_buffer_copy(k)
        slots.setdefault(sk.service_id, {})[sk.slot] = U32.unpack(v)[0]
        slot_raw[(sk.service_id, sk.slot)] = (k, v)
    services = {}
    used_slots: set[tuple[int, int]] = set()
    used_tables: set[int] = set()
    for k, v in raw.services:
        sv = S.LbServiceValue.from_buffer_copy(v)
        mine = slots.get(sv.service_id, {})
        count = min(sv.backend_count, len(mine))  # a count past the slots held is foreign (below)
        backends = tuple(mine[i] for i in range(1, count + 1) if i in mine)
        table = raw.maglev.get(sv.service_id, b"") if sv.flags & S.LbServiceFlags.MAGLEV else b""
        maglev = struct.unpack(f"<{len(table) // 4}I", table)[: sv.maglev_size] if table else ()
        front = decode_frontend(k)
        service = LbService(
            sv.service_id, backends, tuple(maglev),
            sv.affinity_timeout_s if sv.flags & S.LbServiceFlags.AFFINITY else 0,
            bool(sv.flags & S.LbServiceFlags.EXTERNAL), bool(sv.flags & S.LbServiceFlags.DSR))
        exact = (encode_frontend(front) == k and encode_service(service) == v
                 and len(table) == 4 * len(service.maglev))
        if not exact:
            foreign.append(foreign_entry("lb_services", k, v))
            continue
        services[front] = service
        used_slots.update((sv.service_id, i) for i in range(1, len(backends) + 1))
        if service.maglev:
            used_tables.add(sv.service_id)
    foreign.extend(foreign_entry("lb_slots", *slot_raw[s]) for s in sorted(slot_raw.keys() - used_slots))
    for sid in sorted(raw.maglev.keys() - used_tables):
        table = raw.maglev[sid]
        foreign.append(ForeignEntry("lb_maglev", 0, U32.pack(sid).hex(),
                                    f"{len(table) // 4} slots sha256:{hashlib.sha256(table).hexdigest()}"))
    backends_map = {}
    for k, v in raw.backends:
        backend = decode_backend(v)
        if len(k) != 4 or encode_backend(backend) != v:
            foreign.append(foreign_entry("lb_backends", k, v))
            continue
        backends_map[U32.unpack(k)[0]] = backend
    state = LoadBalancerState(
        enabled=bool(cfg.flags & S.LB_CFG_F_ENABLED),
        interface=raw.interface,
        snat_address=from_be32(cfg.snat_addr_be) if cfg.snat_addr_be else None,
        settings=settings,
        services=FrozenMap(services),
        backends=FrozenMap(backends_map),
    )
    if state == LoadBalancerState(snat_address=state.snat_address, settings=state.settings):
        state = LoadBalancerState()  # never enabled: what apply writes for a node without an LB
    if raw.config is not None and encode_node_config(state) != raw.config:
        foreign.append(foreign_entry("lb_config", U32.pack(0), raw.config))
    if state.settings == "" and settings and not any(f.map == SETTINGS_MAP for f in foreign):
        foreign.append(foreign_entry(SETTINGS_MAP, U32.pack(0), settings_raw))
    return state, foreign


def settings_bytes(settings: str) -> bytes:
    return settings.encode()[:SETTINGS_SIZE].ljust(SETTINGS_SIZE, b"\0")


# ---------------------------------------------------------------- kernel


def _items(pin_dir: Path, name: str) -> Items:
    path = pin_dir / name
    if not path.exists():
        return []
    with Map.from_pin(path) as m:
        return m.items()


def read_raw(pin_dir: Path, interface: str = "") -> RawLb | None:
    """Read every LB map of a node's pin dir; None when the object has no LB maps."""
    if not (pin_dir / "lb_services").exists():
        return None
    raw = RawLb(interface=interface)
    with Map.from_pin(pin_dir / "lb_config") as m:
        raw.config = m.lookup(U32.pack(0))
    if (pin_dir / SETTINGS_MAP).exists():
        with Map.from_pin(pin_dir / SETTINGS_MAP) as m:
            raw.settings = m.lookup(U32.pack(0))
    raw.services = _items(pin_dir, "lb_services")
    raw.backends = _items(pin_dir, "lb_backends")
    raw.slots = _items(pin_dir, "lb_slots")
    with Map.from_pin(pin_dir / "lb_maglev") as outer:
        for k, v in outer.items():
            with Map.from_id(U32.unpack(v)[0]) as inner:
                raw.maglev[U32.unpack(k)[0]] = b"".join(
                    val for _, val in sorted(inner.lookup_batch(), key=lambda kv: U32.unpack(kv[0])[0]))
    return raw


def new_maglev_table(service_id: int, table: tuple[int, ...]) -> Map:
    inner = Map.create(BPF_MAP_TYPE_ARRAY, 4, 4, len(table), BPF_F_INNER_MAP, f"mc_mag_{service_id}"[:15])
    keys = [U32.pack(i) for i in range(len(table))]
    inner.update_batch(keys, [U32.pack(b) for b in table])
    return inner


def _write_settings(pin_dir: Path, settings: str) -> None:
    path = pin_dir / SETTINGS_MAP
    if not path.exists():
        with Map.create(BPF_MAP_TYPE_ARRAY, 4, SETTINGS_SIZE, 1, name="meshctl_lbset") as m:
            m.pin(path)
    with Map.from_pin(path) as m:
        m.update(U32.pack(0), settings_bytes(settings))


def write(pin_dir: Path, current: LoadBalancerState, target: LoadBalancerState) -> None:
    """Drive the LB maps from `current` (observed) to `target`; idempotent, make-before-break."""
    if target == current:
        return
    _write_settings(pin_dir, target.settings)
    with Map.from_pin(pin_dir / "lb_backends") as backends:
        add = {i: b for i, b in target.backends.items() if current.backends.get(i) != b}
        if add:
            backends.update_batch([U32.pack(i) for i in add], [encode_backend(b) for b in add.values()])
    # slots and Maglev tables the target uses: a removed or renumbered frontend must not take
    # them along when another frontend (or a hand-moved entry) shares its service id
    keep_slots = {(s.service_id, i + 1) for s in target.services.values() for i in range(len(s.backends))}
    keep_tables = {s.service_id for s in target.services.values() if s.maglev}
    with (Map.from_pin(pin_dir / "lb_slots") as slots, Map.from_pin(pin_dir / "lb_maglev") as maglev,
          Map.from_pin(pin_dir / "lb_services") as services):
        for f, s in target.services.items():
            old = current.services.get(f)
            if old == s:
                continue
            keys = [encode_slot(s.service_id, i + 1) for i in range(len(s.backends))]
            if keys:
                slots.update_batch(keys, [U32.pack(b) for b in s.backends])
            if s.maglev and (old is None or old.maglev != s.maglev or old.service_id != s.service_id):
                with new_maglev_table(s.service_id, s.maglev) as inner:
                    maglev.update(U32.pack(s.service_id), U32.pack(inner.fd))
            services.update(encode_frontend(f), encode_service(s))
        gone = [f for f in current.services if f not in target.services]
        if gone:
            services.delete_batch([encode_frontend(f) for f in gone])
        olds = [o for f, o in current.services.items() if o != target.services.get(f)]
        extra = sorted({(o.service_id, i + 1) for o in olds for i in range(len(o.backends))} - keep_slots)
        if extra:
            slots.delete_batch([encode_slot(sid, i) for sid, i in extra])
        for sid in sorted({o.service_id for o in olds if o.maglev} - keep_tables):
            maglev.delete(U32.pack(sid))
    with Map.from_pin(pin_dir / "lb_config") as cfg:
        cfg.update(U32.pack(0), encode_node_config(target))
    if current.settings and current.settings != target.settings:
        flush_flows(pin_dir)
    with Map.from_pin(pin_dir / "lb_backends") as backends:
        gone_b = [i for i in current.backends if i not in target.backends]
        if gone_b:
            backends.delete_batch([U32.pack(i) for i in gone_b])


def flush_flows(pin_dir: Path) -> int:
    """Forget every flow (forward and reverse) and affinity entry; how many entries went."""
    gone = 0
    for name in FLOW_STATE_MAPS:
        path = pin_dir / name
        if path.exists():
            with Map.from_pin(path) as m:
                gone += len(m.items())
                m.clear()
    return gone


def read_state(pin_dir: Path, interface: str = "") -> LoadBalancerState:
    return decode_state(read_raw(pin_dir, interface))


def tuple_hash(saddr: IPv4Address, daddr: IPv4Address, sport: int, dport: int, protocol: int) -> int:
    """lb_tuple_hash() of bpf/lib/lb.h: the Maglev slot of a flow is this mod the table size."""
    m = 0xFFFFFFFF
    h = 0x9E3779B9
    h = ((h ^ int(saddr)) * 0x85EBCA6B) & m
    h = ((h ^ ((int(daddr) + ((sport << 16) | dport)) & m)) * 0xC2B2AE35) & m
    h ^= protocol
    h ^= h >> 16
    h = (h * 0x85EBCA6B) & m
    h ^= h >> 13
    h = (h * 0xC2B2AE35) & m
    return h ^ (h >> 16)
