"""Connectivity impact: which pod pairs and ports change verdict between observed and intended.

Every pod (and `world`) x every declared containerPort of every destination pod is judged twice
with the datapath emulation meshctl.verdicts.connection_verdict, over the observed and over the
intended NodeStates; only pairs whose verdict flips are kept, with the rules that decide.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, replace
from ipaddress import IPv4Address
from typing import Any

from meshctl.catalog import Catalog
from meshctl.nodestate import PROTO_SCTP, PROTO_TCP, PROTO_UDP, Direction, FrozenMap, NodeState
from meshctl.plan.model import ImpactRow
from meshctl.verdicts import ConnectionVerdict, connection_verdict, staged_connection_verdict

WORLD_NAME = "world"
WORLD_ADDRESS = IPv4Address("198.51.100.7")  # TEST-NET-2: outside every pod CIDR
PROTOCOLS = {"TCP": PROTO_TCP, "UDP": PROTO_UDP, "SCTP": PROTO_SCTP}

VerdictFn = Callable[[Mapping[str, NodeState], IPv4Address, IPv4Address, int, int], ConnectionVerdict]


@dataclass(frozen=True)
class PodTarget:
    """A pod as impact needs it: name, address and declared ports (protocol name, port)."""

    name: str  # "ns/pod"
    ip: IPv4Address
    ports: tuple[tuple[str, int], ...] = ()


@dataclass(frozen=True)
class _Outcome:
    forwarded: bool
    cookies: tuple[int, ...]
    default_deny: tuple[Direction, ...]  # directions whose default deny drops the connection
    # deciding sides with neither a rule nor default deny: "not-enforced" / "no-endpoint"
    plain: tuple[tuple[Direction, str], ...] = ()


def pods_from_desired(desired: Any) -> list[PodTarget]:
    """PodTargets of a DesiredState (pods without an address are skipped)."""
    out: list[PodTarget] = []
    for pod in desired.pods:
        if pod.pod_ip is None:
            continue
        ports = tuple((p.protocol.upper(), int(p.container_port)) for p in pod.ports)
        out.append(PodTarget(f"{pod.namespace}/{pod.name}", IPv4Address(pod.pod_ip), ports))
    return out


def _normalize(result: ConnectionVerdict) -> _Outcome:
    """Deciding sides: the refusing ones when dropped, the allowing ones when forwarded."""
    sides = [(Direction.EGRESS, result.egress), (Direction.INGRESS, result.ingress)]
    deciding = [(d, v) for d, v in sides if v is not None and v.allowed == result.allowed]
    cookies = tuple(dict.fromkeys(v.cookie for _, v in deciding if v.cookie))
    default_deny = tuple(d for d, v in deciding if v.reason == "default-deny")
    plain = tuple((d, v.reason) for d, v in deciding if v.reason in _PLAIN_REASONS)
    return _Outcome(result.allowed, cookies, default_deny, plain)


_PLAIN_REASONS = {
    "not-enforced": "{pod} {direction} not enforced (no policy isolates it)",
    "no-endpoint": "{pod} has no endpoint entry yet (the datapath drops its traffic until apply)",
}


def _label(o: _Outcome) -> str:
    return "FORWARDED" if o.forwarded else "DROPPED"


def _rules(o: _Outcome, src: str, dst: str, catalog: Catalog) -> tuple[str, ...]:
    out: list[str] = []
    out += [catalog.rule_text(cookie) for cookie in o.cookies]
    for direction in o.default_deny:
        pod = dst if direction == Direction.INGRESS else src
        isolating = catalog.isolation.get(pod, {}).get(direction, ())
        by = f" by {', '.join(isolating)}" if isolating else ""
        out.append(f"default deny: {pod} {direction.label} isolated{by}")
    for direction, reason in o.plain:
        pod = dst if direction == Direction.INGRESS else src
        out.append(_PLAIN_REASONS[reason].format(pod=pod, direction=direction.label))
    return tuple(out)


def staged_impact(
    intended: Mapping[str, NodeState], catalog: Catalog, pods: Sequence[PodTarget]
) -> list[ImpactRow]:
    """What enforcing the staged policies would change: the enforced verdicts of the target
    against its staged view (the rules of a default deny name the staged view's isolation)."""
    isolation = dict(catalog.isolation)
    for pod, per_dir in catalog.staged_isolation.items():
        isolation[pod] = FrozenMap({**catalog.isolation.get(pod, {}), **per_dir})
    staged = replace(catalog, isolation=FrozenMap(isolation))
    return connectivity_impact(intended, intended, staged, pods, after_fn=staged_connection_verdict)


def connectivity_impact(
    observed: Mapping[str, NodeState],
    intended: Mapping[str, NodeState],
    catalog: Catalog,
    pods: Sequence[PodTarget],
    verdict_fn: VerdictFn | None = None,
    include_world: bool = True,
    after_fn: VerdictFn | None = None,
) -> list[ImpactRow]:
    """`after_fn` judges the intended side when it differs from `verdict_fn` (staged_impact)."""
    fn = verdict_fn or connection_verdict
    after_of = after_fn or fn
    sources = [(p.name, p.ip) for p in pods]
    if include_world:
        sources.append((WORLD_NAME, WORLD_ADDRESS))
    rows: list[ImpactRow] = []
    for dst in pods:
        for proto_name, port in dst.ports:
            proto = PROTOCOLS.get(proto_name, PROTO_TCP)
            for src_name, src_ip in sources:
                if src_ip == dst.ip:
                    continue
                before = _normalize(fn(observed, src_ip, dst.ip, proto, port))
                after = _normalize(after_of(intended, src_ip, dst.ip, proto, port))
                if before.forwarded == after.forwarded:
                    continue
                rules = _rules(after, src_name, dst.name, catalog)
                rules = rules or _rules(before, src_name, dst.name, catalog)
                rows.append(ImpactRow(src_name, dst.name, proto_name.lower(), port,
                                      _label(before), _label(after), rules))
    rows.sort(key=lambda r: (r.dst, r.port, r.protocol, r.src))
    return rows
