"""Raw ringbuf records -> stored rows: decode struct flow_event and attach names from the Catalog.

Hot path of the agent (goal: 100k events/s in one Python process), so it works on tuples and
caches every name lookup: an IP, an identity or a (cookie, endpoint, direction) triple is
resolved once per catalog, not once per event.
"""

from __future__ import annotations

import socket
import struct
import time
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field

from meshctl.catalog import Catalog
from meshctl.flows.flow import REASON_DEFAULT_DENY, Flow
from meshctl.nodestate import Direction

# struct flow_event (bpf/lib/common.h): addresses and ports stay in network order.
EVENT = struct.Struct("=Q4s4sHHBBBBIIIIB3xI")
EVENT_SIZE = EVENT.size

# Columns of a stored row, in order (the store's schema follows this list).
ROW_FIELDS = (
    "time_ns", "verdict", "reason", "direction", "protocol", "src_ip", "dst_ip", "src_port", "dst_port",
    "src_identity", "dst_identity", "tcp_flags", "length", "cookie", "src_pod", "dst_pod", "src_ns", "dst_ns",
    "src_labels", "dst_labels", "policy", "isolated_by",
)
Row = tuple[object, ...]


def _swap16(v: int) -> int:
    return ((v & 0xFF) << 8) | (v >> 8)


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
    """Turns raw records into rows for one node; caches are per context."""

    def __init__(self, ctx: EnrichContext, offset_ns: int | None = None) -> None:
        self.ctx = ctx
        self.offset_ns = boot_offset_ns() if offset_ns is None else offset_ns
        self._ip: dict[bytes, tuple[str, str, str]] = {}
        self._labels: dict[int, str] = {}
        self._attr: dict[tuple[int, int, int, int, int], tuple[str, str]] = {}
        self._endpoints = ctx.catalog.endpoints.get(ctx.node) or {}
        # Set when a record named something the catalog does not know (a rule cookie, or a
        # default-deny endpoint without isolating policies): the repo may have changed.
        self.missed = False

    def _addr(self, raw: bytes) -> tuple[str, str, str]:
        """(ip, pod, namespace) of a network-order address."""
        hit = self._ip.get(raw)
        if hit is None:
            ip = socket.inet_ntoa(raw)
            pod = self.ctx.pod_by_ip.get(ip, "")
            hit = (ip, pod, pod.partition("/")[0] if pod else "")
            self._ip[raw] = hit
        return hit

    def _label(self, identity: int) -> str:
        hit = self._labels.get(identity)
        if hit is None:
            info = self.ctx.catalog.identities.get(identity)
            hit = labels_text(info.labels) if info else ""
            self._labels[identity] = hit
        return hit

    def _attribution(self, cookie: int, endpoint_id: int, direction: int, reason: int,
                     verdict: int) -> tuple[str, str]:
        """(policy rule, isolating policies) for one verdict."""
        key = (cookie, endpoint_id, direction, reason, verdict)
        hit = self._attr.get(key)
        if hit is None:
            cat = self.ctx.catalog
            origin = cat.cookies.get(cookie) if cookie else None
            policy = str(origin) if origin else ""
            isolated = ""
            if verdict == 2 and reason == REASON_DEFAULT_DENY:
                pod = self._endpoints.get(endpoint_id, "")
                per_dir = cat.isolation.get(pod) if pod else None
                if per_dir:
                    isolated = ",".join(per_dir.get(Direction(direction), ()))
                self.missed |= not isolated
            self.missed |= bool(cookie) and origin is None
            hit = (policy, isolated)
            self._attr[key] = hit
        return hit

    def row(self, rec: tuple[object, ...]) -> Row:
        """One decoded EVENT tuple -> one row in ROW_FIELDS order."""
        (ts, saddr, daddr, sport, dport, proto, direction, verdict, reason,
         sid, did, ep, cookie, flags, length) = rec
        src_ip, src_pod, src_ns = self._addr(saddr)  # type: ignore[arg-type]
        dst_ip, dst_pod, dst_ns = self._addr(daddr)  # type: ignore[arg-type]
        policy, isolated = self._attribution(cookie, ep, direction, reason, verdict)  # type: ignore[arg-type]
        return (
            ts + self.offset_ns, verdict, reason, direction, proto, src_ip, dst_ip,  # type: ignore[operator]
            _swap16(sport), _swap16(dport), sid, did, flags, length, cookie,  # type: ignore[arg-type]
            src_pod, dst_pod, src_ns, dst_ns, self._label(sid), self._label(did),  # type: ignore[arg-type]
            policy, isolated,
        )

    def rows(self, raw: bytes) -> list[Row]:
        """A buffer of back-to-back records (a batch from the reader) -> rows."""
        return [self.row(rec) for rec in EVENT.iter_unpack(raw)]


def flow_of(row: Row, node: str) -> Flow:
    """A stored row (ROW_FIELDS order) -> Flow."""
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
