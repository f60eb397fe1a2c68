"""Replay recorded flows through both revisions: which observed connections would change verdict.

Each distinct (source pod, destination pod, destination port, protocol) of the window is judged
once per revision with meshctl.verdicts.connection_verdict over the compiled NodeStates. Pods
are found by name in the inventory (their recorded address is the fallback), so a flow recorded
before a pod was re-addressed still replays.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

from meshctl.impact.explain import side_rules
from meshctl.impact.inventory import replay_addresses
from meshctl.impact.model import FlowReplay, ReplayedFlow
from meshctl.nodestate import PROTOCOL_NAMES

VERDICT_FORWARDED = 1


def _label(allowed: bool) -> str:
    return "FORWARDED" if allowed else "DROPPED"


def replay_flows(flows: Sequence[Any], compared: Any, inventory: Any, window: str) -> FlowReplay:
    from meshctl.impact.http import replay_requests
    from meshctl.verdicts import connection_verdict

    addresses = {p.key: p.pod_ip for p in inventory.pods if p.pod_ip is not None}
    requests_seen, requests = replay_requests(flows, compared.base_nodes, compared.head_nodes, addresses)
    flows = [f for f in flows if not f.l7]  # the datapath's flows: connections
    groups: dict[tuple[str, str, int, int], list[Any]] = {}
    for f in flows:
        src = f.src_pod or f.src_ip
        dst = f.dst_pod or f.dst_ip
        groups.setdefault((src, dst, f.protocol, f.dst_port), []).append(f)
    changed: list[ReplayedFlow] = []
    for (src, dst, proto, port), group in groups.items():
        newest = max(group, key=lambda f: f.time_ns)
        ends = replay_addresses(addresses, src, dst, newest)
        if ends is None:
            continue
        src_ip, dst_ip = ends
        before = connection_verdict(compared.base_nodes, src_ip, dst_ip, proto, port)
        after = connection_verdict(compared.head_nodes, src_ip, dst_ip, proto, port)
        if before.allowed == after.allowed:
            continue
        rules = side_rules(compared.head_nodes, compared.head.catalog, src, src_ip, dst, dst_ip, proto, port)
        changed.append(ReplayedFlow(
            src, dst, PROTOCOL_NAMES.get(proto, str(proto)), port, len(group), newest.time_ns,
            "FORWARDED" if newest.verdict == VERDICT_FORWARDED else "DROPPED",
            _label(before.allowed), _label(after.allowed), rules,
        ))
    changed.sort(key=lambda r: (r.head != "DROPPED", -r.count, r.dst, r.port, r.src))
    return FlowReplay(window, len(flows), len(groups), tuple(changed), requests_seen=requests_seen,
                      requests=requests)
