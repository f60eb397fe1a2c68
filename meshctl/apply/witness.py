"""Drops the datapath recorded for one probe connection: the node's flow store, else its counters.

A "denied" expectation holds only when the datapath itself says it dropped that connection by
policy. The best witness is the node's flow store (its agent names every drop with addresses,
ports, protocol and reason): the probe's exact 5-tuple is looked up inside its time window. The
agent stores in batches (one ring poll, about 100 ms), so a miss is retried for a short settle
time. A node without a running agent has only its drop counters (verdict, reason, direction):
they are read before and after the probe, so they say a drop of which reason happened on the
node while the probe ran, not which connection it hit; the outcome says so.
"""

from __future__ import annotations

import time
from collections import Counter
from collections.abc import Callable, Collection, Iterable, Mapping, Sequence
from pathlib import Path
from typing import TYPE_CHECKING

from meshctl.apply.gates import VERDICT_DROPPED, MetricCounts, ProbeAttempt, WitnessedDrop, drops_by_reason
from meshctl.errors import MeshctlError
from meshctl.flows.filters import FlowFilter
from meshctl.flows.flow import PROTOCOL_NUMBERS, Flow

if TYPE_CHECKING:
    from meshctl.flows.store import FlowStore

SETTLE_S = 0.6  # the agent polls its ring every 100 ms
POLL_S = 0.05
SLACK_NS = 200_000_000  # ring timestamps are converted to wall clock: allow for the offset


def matching_drops(flows: Iterable[Flow], attempt: ProbeAttempt) -> Counter[int]:
    """reason -> dropped packets of exactly this connection (either direction of it)."""
    proto = PROTOCOL_NUMBERS.get(attempt.protocol.lower(), -1)
    out: Counter[int] = Counter()
    for f in flows:
        if f.verdict != VERDICT_DROPPED or f.protocol != proto:
            continue
        forward = (f.src_ip, f.src_port, f.dst_ip, f.dst_port) == (
            attempt.src_ip, attempt.src_port, attempt.dst_ip, attempt.dst_port)
        reply = (f.dst_ip, f.dst_port, f.src_ip, f.src_port) == (
            attempt.src_ip, attempt.src_port, attempt.dst_ip, attempt.dst_port)
        if forward or reply:
            out[f.reason] += 1
    return out


def store_drops(store: FlowStore, node: str, attempt: ProbeAttempt) -> list[WitnessedDrop]:
    """This connection's drops in the node's flow store as stored so far."""
    flt = FlowFilter(verdicts=("DROPPED",), since_ns=attempt.since_ns - SLACK_NS,
                     until_ns=attempt.until_ns + SLACK_NS)
    found = matching_drops((f for _, f in store.query(flt)), attempt)
    return [WitnessedDrop(node, r, n, "flows") for r, n in sorted(found.items())]


def counter_drops(node: str, before: MetricCounts, after: MetricCounts) -> list[WitnessedDrop]:
    return [WitnessedDrop(node, r, n, "counters") for r, n in sorted(drops_by_reason(before, after).items())]


class LabWitness:
    """Witness of the nodes this process can see: `store_of(node)` is the node's flow store when its
    agent runs (else None: counters), `counts(node)` its datapath counters. `visible` limits the
    nodes (an agent sees only its own); None means all."""

    def __init__(self, store_of: Callable[[str], Path | None], counts: Callable[[str], MetricCounts],
                 visible: Collection[str] | None = None, settle_s: float = SETTLE_S) -> None:
        self.store_of, self.counts, self.visible, self.settle_s = store_of, counts, visible, settle_s

    def nodes(self, nodes: Sequence[str]) -> list[str]:
        return [n for n in nodes if self.visible is None or n in self.visible]

    def snapshot(self, nodes: Sequence[str]) -> dict[str, MetricCounts]:
        """Counters of the nodes without a store, read before the connection is made."""
        return {n: self.counts(n) for n in self.nodes(nodes) if self.store_of(n) is None}

    def drops(self, nodes: Sequence[str], attempt: ProbeAttempt,
              snapshot: Mapping[str, MetricCounts]) -> list[WitnessedDrop]:
        """The connection's drops on the visible nodes. Stores are polled together until one of
        them names the connection (a packet dropped on one node never reaches the next) or the
        settle time ends; nodes without a readable store answer from their counters."""
        from meshctl.flows.store import FlowStore

        out: list[WitnessedDrop] = []
        stores: dict[str, FlowStore] = {}
        try:
            for node in self.nodes(nodes):
                path = self.store_of(node)
                try:
                    if path is not None:
                        stores[node] = FlowStore(path, node, readonly=True)
                        continue
                except MeshctlError:  # unreadable store: the counters can still say something
                    pass
                if node in snapshot:
                    out += counter_drops(node, snapshot[node], self.counts(node))
            deadline = time.monotonic() + self.settle_s
            while stores:
                found = [d for node, store in stores.items() for d in store_drops(store, node, attempt)]
                if found or time.monotonic() >= deadline:
                    return out + found
                time.sleep(POLL_S)
            return out
        finally:
            for store in stores.values():
                store.close()
