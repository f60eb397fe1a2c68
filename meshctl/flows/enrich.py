"""Raw ringbuf records -> stored rows: decode struct flow_event and attach names from the Catalog.

Hot path of the agent (goal: 100k+ events/s in one Python process), so it works on tuples and
caches every name lookup: an (address, identity) pair or a (cookie, endpoint, direction, ...)
key is resolved once per catalog, not once per event, into an interned id (meshctl.flows.dims).
A stored row is integers only (STORED_FIELDS); readers join the names back (WIDE_FIELDS).
"""

from __future__ import annotations

import socket
import struct
import time
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field

from meshctl.catalog import Catalog
from meshctl.flows.dims import Dimensions
from meshctl.flows.flow import REASON_DEFAULT_DENY, VERDICT_AUDIT, VERDICT_DROPPED, Flow
from meshctl.nodestate import Direction

# struct flow_event (bpf/lib/common.h): addresses and ports stay in network order.
EVENT = struct.Struct("=Q4s4sHHBBBBIIIIB3xI")
EVENT_SIZE = EVENT.size
# The same record as it sits in the ring buffer: an 8-byte header first (meshctl.flows.ring).
FRAMED_EVENT = struct.Struct("=8x" + EVENT.format[1:])

# Columns of a stored flow row, in order: peers and attribution are ids (meshctl.flows.dims).
STORED_FIELDS = (
    "time_ns", "verdict", "reason", "direction", "protocol", "src_port", "dst_port", "tcp_flags",
    "length", "cookie", "src_peer", "dst_peer", "attribution",
)
# A row as readers see it (flows joined with their peers and attribution): `flow_of` input.
WIDE_FIELDS = (
    "time_ns", "verdict", "reason", "direction", "protocol", "src_ip", "dst_ip", "src_port", "dst_port",
    "src_identity", "dst_identity", "tcp_flags", "length", "cookie", "src_pod", "dst_pod", "src_ns", "dst_ns",
    "src_labels", "dst_labels", "policy", "isolated_by",
)
ROW_FIELDS = WIDE_FIELDS  # the name older callers used for the wide layout
Row = tuple[object, ...]
# Positions in a stored row (metrics count on them).
R_VERDICT, R_REASON, R_DIRECTION, R_PROTOCOL, R_ATTRIBUTION = 1, 2, 3, 4, 12


def boot_offset_ns() -> int:
    """Add to bpf_ktime_get_ns() (CLOCK_MONOTONIC) to get wall-clock ns."""
    return time.time_ns() - time.monotonic_ns()


def labels_text(labels: Iterable[str]) -> str:
    """Stored as ",a,b," so a label filter is one LIKE '%,label,%' (or '%:key=value,%')."""
    items = list(labels)
    return "," + ",".join(items) + "," if items else ""


@dataclass
class EnrichContext:
    """What the enricher knows: the catalog plus pod IPs ("ns/pod" by address) of the cluster."""

    node: str
    catalog: Catalog = field(default_factory=Catalog)
    pod_by_ip: Mapping[str, str] = field(default_factory=dict)


class Enricher:
    """Turns raw records into stored rows for one node; caches are per context.

    Times are the store's primary key, so they must increase: a record whose time is not
    after the previous one (two CPUs reserving out of order, a few hundred ns) is stored 1 ns
    after it. `floor_ns` is the newest time already stored.
    """

    def __init__(self, ctx: EnrichContext, dims: Dimensions | None = None, offset_ns: int | None = None,
                 floor_ns: int = 0, names: Mapping[str, tuple[str, ...]] | None = None) -> None:
        self.ctx = ctx
        self.names = names if names is not None else {}  # address -> DNS names (the agent's DnsRecords)
        self.dims = dims if dims is not None else Dimensions()
        self.offset_ns = boot_offset_ns() if offset_ns is None else offset_ns
        self.last_ns = floor_ns
        self._peers: dict[tuple[bytes, int], int] = {}
        self._attrs: dict[tuple[int, int, int, int, int], int] = {}
        self._endpoints = ctx.catalog.endpoints.get(ctx.node) or {}
        # Set when a record named something the catalog does not know (a rule cookie, or a
        # default-deny endpoint without isolating policies): the repo may have changed.
        self.missed = False

    def _peer(self, raw: bytes, identity: int) -> int:
        ip = socket.inet_ntoa(raw)
        pod = self.ctx.pod_by_ip.get(ip, "")
        info = self.ctx.catalog.identities.get(identity)
        pid = self.dims.peer(ip, identity, pod, labels_text(info.labels) if info else "",
                             ",".join(self.names.get(ip, ())))
        self._peers[(raw, identity)] = pid
        return pid

    def forget(self, ips: Iterable[str]) -> None:
        """Name these addresses again (a DNS answer gave them new names)."""
        raws = {socket.inet_aton(ip) for ip in ips}
        for key in [k for k in self._peers if k[0] in raws]:
            del self._peers[key]

    def _attribution(self, key: tuple[int, int, int, int, int]) -> int:
        """(policy rule, isolating policies) of one verdict, interned."""
        cookie, endpoint_id, direction, reason, verdict = key
        cat = self.ctx.catalog
        origin = cat.cookies.get(cookie) if cookie else None
        isolated = ""
        if verdict in (VERDICT_DROPPED, VERDICT_AUDIT) and reason == REASON_DEFAULT_DENY:
            pod = self._endpoints.get(endpoint_id, "")
            isolation = cat.staged_isolation if verdict == VERDICT_AUDIT else cat.isolation
            per_dir = isolation.get(pod) if pod else None
            if per_dir:
                isolated = ",".join(per_dir.get(Direction(direction), ()))
            self.missed |= not isolated
        self.missed |= bool(cookie) and origin is None
        aid = self.dims.attribution(str(origin) if origin else "", isolated)
        self._attrs[key] = aid
        return aid

    def rows(self, raw: bytes, framed: bool = False) -> list[Row]:
        """Back-to-back records (bare, or framed with ring headers) -> stored rows."""
        peers, attrs = self._peers, self._attrs
        off, last = self.offset_ns, self.last_ns
        out: list[Row] = []
        append = out.append
        for (ts, saddr, daddr, sport, dport, proto, direction, verdict, reason,
             sid, did, ep, cookie, flags, length) in (FRAMED_EVENT if framed else EVENT).iter_unpack(raw):
            t = ts + off
            if t <= last:
                t = last + 1
            last = t
            s = peers.get((saddr, sid))
            if s is None:
                s = self._peer(saddr, sid)
            d = peers.get((daddr, did))
            if d is None:
                d = self._peer(daddr, did)
            akey = (cookie, ep, direction, reason, verdict)
            a = attrs.get(akey)
            if a is None:
                a = self._attribution(akey)
            append((t, verdict, reason, direction, proto, ((sport & 0xFF) << 8) | (sport >> 8),
                    ((dport & 0xFF) << 8) | (dport >> 8), flags, length, cookie, s, d, a))
        self.last_ns = last
        return out

    def wide(self, rows: Iterable[Row]) -> list[Row]:
        """Stored rows -> WIDE_FIELDS rows from this enricher's dimensions (tests, no SQL)."""
        peer_of = {pid: key for key, pid in self.dims.peers.items()}
        out: list[Row] = []
        for (t, verdict, reason, direction, proto, sport, dport, flags, length, cookie, s, d, a) in rows:
            sip, sid, spod, slab, _ = peer_of[s]  # type: ignore[index]
            dip, did, dpod, dlab, _ = peer_of[d]  # type: ignore[index]
            policy, isolated = self.dims.attr_names[a]  # type: ignore[index]
            out.append((t, verdict, reason, direction, proto, sip, dip, sport, dport, sid, did, flags, length,
                        cookie, spod, dpod, spod.partition("/")[0], dpod.partition("/")[0], slab, dlab,
                        policy, isolated))
        return out


def flow_of(row: Row, node: str) -> Flow:
    """A wide row (WIDE_FIELDS order, as the store reads it back) -> Flow."""
    (t, verdict, reason, direction, proto, sip, dip, sport, dport, sid, did, flags, length, cookie,
     spod, dpod, _sns, _dns, slab, dlab, policy, isolated) = row
    return Flow(
        time_ns=int(t), node=node, verdict=int(verdict), reason=int(reason),  # type: ignore[call-overload]
        direction=int(direction), protocol=int(proto), src_ip=str(sip), dst_ip=str(dip),  # type: ignore[call-overload]
        src_port=int(sport), dst_port=int(dport), src_identity=int(sid),  # type: ignore[call-overload]
        dst_identity=int(did), tcp_flags=int(flags), length=int(length), cookie=int(cookie),  # type: ignore[call-overload]
        src_pod=str(spod or ""), dst_pod=str(dpod or ""),
        src_labels=tuple(x for x in str(slab or "").split(",") if x),
        dst_labels=tuple(x for x in str(dlab or "").split(",") if x),
        policy=str(policy or ""), isolated_by=tuple(x for x in str(isolated or "").split(",") if x),
    )
