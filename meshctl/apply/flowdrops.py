"""The drop gate's flow source: a node's drops in a window, by connection and reason, from its flow store.

The node's agent (meshctl.flows.agent) names every dropped packet it reads from the ring buffer
and stores it in <state>/flows/<node>.db; read-only queries run while it writes (WAL). The
agent stores in batches (one ring poll, about 100 ms), so before counting we wait until it has
flushed the window: its newest stored flow is past the window's end, or it holds at least as
many drops as the datapath counters saw, or a short settle time has passed. Every reason is
kept (no-endpoint drops of a broken node must reach the gate), each with its connection.

Without a running agent for the node (or with a store we cannot read) the answer is None and the
gate falls back to the datapath counters.
"""

from __future__ import annotations

import logging
import time
from collections import Counter
from collections.abc import Callable, Mapping
from pathlib import Path
from typing import Any

from meshctl.apply.gates import VERDICT_DROPPED, WORLD, DropKey
from meshctl.errors import MeshctlError
from meshctl.flows.filters import FlowFilter
from meshctl.flows.flow import Flow, protocol_name

log = logging.getLogger(__name__)

SETTLE_S = 0.5  # the agent polls its ring every 100 ms: five polls at most
POLL_S = 0.02


def drop_key(flow: Flow, pod_by_ip: Mapping[str, str]) -> DropKey:
    """The connection a dropped flow belongs to, named as the plan's impact names it."""
    f = flow
    return key_of(f.src_ip, f.dst_ip, f.src_pod, f.dst_pod, f.dst_port, f.protocol, pod_by_ip)


def key_of(src_ip: str, dst_ip: str, src_pod: str, dst_pod: str, dst_port: int, protocol: int,
           pod_by_ip: Mapping[str, str]) -> DropKey:
    """Ends by address first (the repo's names), then by the agent's names, else world / the address."""
    src = pod_by_ip.get(src_ip) or src_pod or WORLD
    dst = pod_by_ip.get(dst_ip) or dst_pod or dst_ip
    return (src, dst, dst_port, protocol_name(protocol).lower())


def count_drops(flows: list[Flow], pod_by_ip: Mapping[str, str]) -> Counter[tuple[DropKey, int]]:
    """Dropped flows by (connection, reason), every reason."""
    return Counter((drop_key(f, pod_by_ip), f.reason) for f in flows if f.verdict == VERDICT_DROPPED)


def window_drops(path: Path, node: str, since_ns: int, until_ns: int, counted: int,
                 settle_s: float = SETTLE_S) -> list[Flow]:
    """The dropped flows a node's store holds for a window, once its agent has flushed it (see
    module doc). Raises StoreError (a MeshctlError) for an unreadable store."""
    from meshctl.flows.store import FlowStore

    flt = FlowFilter(verdicts=("DROPPED",), since_ns=since_ns, until_ns=until_ns)
    deadline = time.monotonic() + settle_s
    with FlowStore(path, node, readonly=True) as store:
        while True:
            flows = [f for _, f in store.query(flt)]
            flushed = store.max_time() >= until_ns or len(flows) >= counted
            if flushed or time.monotonic() >= deadline:
                return flows
            time.sleep(POLL_S)


class StoreDropSource:
    """Callable(node, since_ns, until_ns, counted) -> drops by (connection, reason), or None.

    `counted` is what the datapath counters saw in (about) the same window: once the store holds
    that many, it has flushed. `running` answers which nodes have a live agent (lab: the agents'
    pid file); `pod_by_ip` names the lab's pods by address (the agent names them too, but its
    names may lag a repo change).
    """

    def __init__(
        self,
        state_dir: Path,
        running: Callable[[], Mapping[str, int]],
        pod_by_ip: Mapping[str, str],
        settle_s: float = SETTLE_S,
    ) -> None:
        self.state_dir, self.running, self.pod_by_ip = Path(state_dir), running, dict(pod_by_ip)
        self.settle_s = settle_s

    def __call__(self, node: str, since_ns: int, until_ns: int,
                 counted: int) -> Counter[tuple[DropKey, int]] | None:
        from meshctl.flows.store import store_path

        path = store_path(self.state_dir, node)
        if node not in self.running() or not path.exists():
            return None
        try:
            return count_drops(window_drops(path, node, since_ns, until_ns, counted, self.settle_s),
                               self.pod_by_ip)
        except MeshctlError as err:  # an unreadable store: the counters still judge
            log.warning("drop gate %s: flow store unreadable (%s); using datapath counters", node, err)
            return None


class AgentDropSource:
    """The same answer from each node's agent over its API (POST /v1/flowdrops with a window):
    the gate of an agent-driven apply judges by connection, as in the lab. None when the agent
    has no flow store or cannot answer (the counters then judge)."""

    def __init__(self, clients: Callable[[str], Any], pod_by_ip: Mapping[str, str]) -> None:
        self.clients, self.pod_by_ip = clients, dict(pod_by_ip)

    def __call__(self, node: str, since_ns: int, until_ns: int,
                 counted: int) -> Counter[tuple[DropKey, int]] | None:
        try:
            rows = self.clients(node).window_drops(since_ns, until_ns, counted)
        except MeshctlError as err:
            log.warning("drop gate %s: the agent gave no flows (%s); using datapath counters", node, err)
            return None
        if rows is None:
            return None
        out: Counter[tuple[DropKey, int]] = Counter()
        for src_ip, dst_ip, src_pod, dst_pod, dport, proto, reason, n in rows:
            out[(key_of(src_ip, dst_ip, src_pod, dst_pod, dport, proto, self.pod_by_ip), reason)] += n
        return out


def wire_rows(flows: list[Flow]) -> list[list[Any]]:
    """Dropped flows aggregated for the wire: [src_ip, dst_ip, src_pod, dst_pod, dport, proto, reason, n]."""
    counts = Counter((f.src_ip, f.dst_ip, f.src_pod, f.dst_pod, f.dst_port, f.protocol, f.reason)
                     for f in flows if f.verdict == VERDICT_DROPPED)
    return [[*k, n] for k, n in sorted(counts.items())]
