"""Verification gates as pure functions: which checks to run after a wave, and the drop gate.

Checks mid-rollout. A connection from pod A to pod B passes A's egress policy on A's node and
B's ingress policy on B's node. While only some nodes carry the new policy, a check that spans
an updated and a not-yet-updated node tests a mix of old and new rules that the desired state
never describes, so its expectation means nothing yet. We therefore run a check after a wave
when (1) every node that enforces it (the source pod's node, and the destination pod's node
when the destination is a pod) is final - already applied, or without changes in this plan -
and (2) at least one of those nodes was applied in this wave (otherwise it was already verified
or the plan does not touch it). Every check that touches a changed node thus runs exactly once,
in the wave that completes it; a check deferred by the canary runs in a later batch. A check to
an address outside the cluster depends on the source node only.

Drop gate. "Policy drops on that node in the verify window must not exceed the threshold, not
counting drops the plan predicted." Policy drops are verdict DROPPED with reason default-deny or
explicit-deny. Predicted drops are the plan's connectivity impact pairs that go FORWARDED ->
DROPPED (same source pod, destination pod, port and protocol): traffic the plan means to cut.
Everything else dropped on the node in the window is unexpected - also traffic that was already
denied before the apply: the plan does not explain it, and the threshold is the place to allow
for such background noise. The unexpected rate per second must stay at or below the threshold.

Two sources, best first: the node's flow store (its agent names every drop, so predicted ones
can be told apart and subtracted: `flow_drop_gate`), else the datapath counters, which count
drops but cannot say which connection they hit, so nothing is subtracted (`drop_gate`, and the
gate's message says so).
"""

from __future__ import annotations

from collections.abc import Collection, Iterable, Mapping
from dataclasses import dataclass
from ipaddress import IPv4Address
from typing import Protocol

VERDICT_DROPPED = 2
REASON_DEFAULT_DENY = 2
REASON_EXPLICIT_DENY = 3
POLICY_DROP_REASONS = frozenset({REASON_DEFAULT_DENY, REASON_EXPLICIT_DENY})

# (verdict, reason, direction) -> packets, summed over CPUs (struct metrics_key of common.h)
MetricCounts = Mapping[tuple[int, int, int], int]
# One connection as the impact names it: (source pod or "world", destination pod, port, protocol)
# with the protocol in lower case ("tcp", "udp", "sctp").
DropKey = tuple[str, str, int, str]
WORLD = "world"
UNEXPECTED_SHOWN = 3  # connections named in a failing gate's message


class CheckLike(Protocol):
    """The fields of meshctl.model ConnectivityCheck that the gate needs."""

    name: str
    from_: str
    to: str
    port: int
    protocol: str
    expect: str


@dataclass(frozen=True)
class PlannedCheck:
    """A check picked for a wave, with the nodes it spans."""

    check: CheckLike
    nodes: tuple[str, ...]


def check_nodes(check: CheckLike, pod_nodes: Mapping[str, str],
                frontend_nodes: Mapping[str, tuple[str, ...]] | None = None) -> tuple[str, ...]:
    """The nodes whose policy decides the check: source pod's node, destination pod's node.

    A destination that is a service address (ClusterIP, LoadBalancer IP) adds the nodes of the
    service's backends (`frontend_nodes`, from meshctl.compile.services.frontend_nodes).
    """
    nodes = [pod_nodes[check.from_]] if check.from_ in pod_nodes else []
    to = str(check.to)
    if not _is_ipv4(to) and to in pod_nodes:
        nodes.append(pod_nodes[to])
    elif frontend_nodes and to in frontend_nodes:
        nodes.extend(frontend_nodes[to])
    return tuple(dict.fromkeys(nodes))


def _is_ipv4(text: str) -> bool:
    try:
        IPv4Address(text)
    except ValueError:
        return False
    return True


def checks_for_wave(
    checks: Iterable[CheckLike],
    pod_nodes: Mapping[str, str],
    final_nodes: Iterable[str],
    wave_nodes: Iterable[str],
    frontend_nodes: Mapping[str, tuple[str, ...]] | None = None,
) -> list[PlannedCheck]:
    """The checks that become meaningful once `wave_nodes` are applied (see module doc).

    `final_nodes` are the nodes already carrying their target state, the wave included.
    """
    final, wave = set(final_nodes), set(wave_nodes)
    picked = []
    for check in checks:
        nodes = check_nodes(check, pod_nodes, frontend_nodes)
        if nodes and set(nodes) <= final and wave & set(nodes):
            picked.append(PlannedCheck(check, nodes))
    return picked


@dataclass(frozen=True)
class CheckOutcome:
    """A check run for real: what it expected and what the connection did."""

    check: CheckLike
    observed: str  # "allowed" | "denied"
    detail: str = ""

    @property
    def ok(self) -> bool:
        return self.observed == self.check.expect

    def describe(self) -> str:
        c = self.check
        verdict = "ok" if self.ok else "FAILED"
        text = (
            f"check {c.name}: {c.from_} -> {c.to}:{c.port}/{c.protocol} expected {c.expect}, "
            f"observed {self.observed}: {verdict}"
        )
        return f"{text} ({self.detail})" if self.detail and not self.ok else text


def policy_drops(before: MetricCounts, after: MetricCounts) -> int:
    """Policy drops counted between two samples; a counter that went down restarted from 0."""
    total = 0
    for key, now in after.items():
        verdict, reason, _direction = key
        if verdict != VERDICT_DROPPED or reason not in POLICY_DROP_REASONS:
            continue
        then = before.get(key, 0)
        total += now - then if now >= then else now
    return total


class ImpactLike(Protocol):
    """The fields of meshctl.plan ImpactRow that the predictions need."""

    src: str
    dst: str
    protocol: str
    port: int
    before: str
    after: str


def predicted_drop_keys(impact: Iterable[ImpactLike]) -> frozenset[DropKey]:
    """The connections the plan means to cut: impact pairs going FORWARDED -> DROPPED."""
    return frozenset(
        (r.src, r.dst, int(r.port), r.protocol.lower())
        for r in impact
        if r.before == "FORWARDED" and r.after == "DROPPED"
    )


def describe_key(key: DropKey) -> str:
    src, dst, port, protocol = key
    return f"{src} -> {dst}:{port}/{protocol}"


@dataclass(frozen=True)
class DropGateResult:
    node: str
    drops: int
    predicted: int
    window_s: float
    threshold_per_s: float
    source: str = "counters"  # "flows" (the node's flow store) | "counters" (datapath MetricsMap)
    unexplained: tuple[tuple[DropKey, int], ...] = ()  # unexpected drops by connection, most first
    note: str = ""

    @property
    def unexpected(self) -> int:
        return max(0, self.drops - self.predicted)

    @property
    def rate_per_s(self) -> float:
        return self.unexpected / self.window_s if self.window_s > 0 else float(self.unexpected)

    @property
    def ok(self) -> bool:
        return self.rate_per_s <= self.threshold_per_s

    def describe(self) -> str:
        verdict = "ok" if self.ok else "FAILED"
        text = (
            f"drop gate {self.node}: {self.drops} policy drops in {self.window_s:g}s, "
            f"{self.predicted} predicted, {self.rate_per_s:.2f}/s unexpected "
            f"(threshold {self.threshold_per_s:g}/s): {verdict}"
        )
        if self.unexplained and not self.ok:
            shown = ", ".join(f"{describe_key(k)} x{n}" for k, n in self.unexplained[:UNEXPECTED_SHOWN])
            more = len(self.unexplained) - UNEXPECTED_SHOWN
            text += f"; unexpected: {shown}" + (f" and {more} more" if more > 0 else "")
        return f"{text} ({self.note})" if self.note else text


def drop_gate(
    node: str,
    before: MetricCounts,
    after: MetricCounts,
    window_s: float,
    threshold_per_s: float,
    predicted: int = 0,
    note: str = "",
) -> DropGateResult:
    """Judge one node's verify window from two MetricsMap samples."""
    return DropGateResult(
        node, policy_drops(before, after), predicted, window_s, threshold_per_s, note=note
    )


def no_flows_note(node: str) -> str:
    return (f"no flow agent on {node}: datapath counters only, "
            "the plan's predicted drops could not be subtracted")


def flow_drop_gate(
    node: str,
    dropped: Mapping[DropKey, int],
    predicted: Collection[DropKey],
    window_s: float,
    threshold_per_s: float,
    note: str = "",
) -> DropGateResult:
    """Judge one node's verify window from its stored policy drops, by connection.

    `dropped` counts the node's policy-drop flows in the window per connection; those whose
    connection the plan predicted to drop are subtracted, the rest are named when the gate fails.
    """
    total = sum(dropped.values())
    expected = sum(n for k, n in dropped.items() if k in predicted)
    rest = sorted(((k, n) for k, n in dropped.items() if k not in predicted and n > 0),
                  key=lambda kn: (-kn[1], kn[0]))
    return DropGateResult(node, total, expected, window_s, threshold_per_s, "flows", tuple(rest), note)
