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

Drop gate. "Drops on that node in the verify window must not exceed the threshold, not counting
drops the plan predicted." Every drop reason counts: a node whose endpoint entries vanished
drops everything with no-endpoint, and that must fail it as surely as a policy drop would.
Predicted drops are policy drops (default or explicit deny) of the plan's connectivity impact
pairs that go FORWARDED -> DROPPED (same source pod, destination pod, port and protocol): traffic
the plan means to cut; the drops that the verify probes expecting "denied" caused themselves are
explained too (exactly those packets when the flow store names them).
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
REASON_NO_ENDPOINT = 6
POLICY_DROP_REASONS = frozenset({REASON_DEFAULT_DENY, REASON_EXPLICIT_DENY})
# enum flow_reason of bpf/lib/common.h, the drop reasons (REASON_NO_SERVICE_BACKEND is 7)
DROP_REASON_NAMES = {2: "default deny", 3: "explicit deny", 4: "IPv6 dropped", 5: "malformed packet",
                     6: "no endpoint", 7: "no service backend", 8: "L7 proxy down",
                     9: "L7 port outside the proxy"}

# (verdict, reason, direction) -> packets, summed over CPUs (struct metrics_key of common.h)
MetricCounts = Mapping[tuple[int, int, int], int]
# One connection as the impact names it: (source pod or "world", destination pod, port, protocol)
# with the protocol in lower case ("tcp", "udp", "sctp").
DropKey = tuple[str, str, int, str]
# A connection's drops with the datapath's reason: ((src, dst, port, protocol), reason) -> packets
DropCounts = Mapping[tuple[DropKey, int], int]
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


def reason_name(reason: int) -> str:
    return DROP_REASON_NAMES.get(reason, f"reason {reason}")


@dataclass(frozen=True)
class WitnessedDrop:
    """A drop the datapath recorded for a probe's connection on one node.

    source "flows": the node's flow store named this very connection (addresses, ports,
    protocol); "counters": the node's drop counters rose while the probe ran (not per connection).
    """

    node: str
    reason: int
    packets: int = 1
    source: str = "flows"

    @property
    def policy(self) -> bool:
        return self.reason in POLICY_DROP_REASONS


@dataclass(frozen=True)
class ProbeAttempt:
    """One connection as made: its exact 5-tuple and time window, and whether it completed."""

    src_ip: str
    dst_ip: str
    src_port: int
    dst_port: int
    protocol: str  # "TCP" | "UDP"
    since_ns: int
    until_ns: int
    connected: bool
    error: str = ""

    def to_json(self) -> dict[str, object]:
        return {"src_ip": self.src_ip, "dst_ip": self.dst_ip, "src_port": self.src_port,
                "dst_port": self.dst_port, "protocol": self.protocol, "since_ns": self.since_ns,
                "until_ns": self.until_ns, "connected": self.connected, "error": self.error}

    @classmethod
    def from_json(cls, d: Mapping[str, object]) -> ProbeAttempt:
        return cls(str(d["src_ip"]), str(d["dst_ip"]), int(str(d["src_port"])), int(str(d["dst_port"])),
                   str(d["protocol"]), int(str(d["since_ns"])), int(str(d["until_ns"])), bool(d["connected"]),
                   str(d.get("error", "")))


@dataclass(frozen=True)
class CheckOutcome:
    """A check or probe run for real: what it expected and what happened.

    observed "allowed": the connection completed; "denied": it failed AND the datapath recorded
    a policy drop of it; "error": it failed for any other reason (refused, no route, a drop with
    another reason such as no-endpoint, a missing pod) - an error never satisfies an expectation.
    """

    check: CheckLike
    observed: str  # "allowed" | "denied" | "error"
    detail: str = ""
    drops: tuple[WitnessedDrop, ...] = ()
    attempt: ProbeAttempt | None = None

    @property
    def ok(self) -> bool:
        return self.observed == self.check.expect

    @property
    def label(self) -> str:
        return str(getattr(self.check, "origin", "check") or "check")

    def describe(self) -> str:
        c = self.check
        head = f"{self.label} {c.name}: {c.from_} -> {c.to}:{c.port}/{c.protocol} expected {c.expect}"
        if self.observed == "error":
            return f"{head}: ERROR ({self.detail or 'no detail'})"
        text = f"{head}, observed {self.observed}: {'ok' if self.ok else 'FAILED'}"
        shown = self.detail and (not self.ok or self.observed == "denied")  # say which drop confirmed it
        return f"{text} ({self.detail})" if shown else text


def drops_by_reason(before: MetricCounts, after: MetricCounts) -> dict[int, int]:
    """Drops of every reason counted between two samples; a counter that went down restarted from 0."""
    out: dict[int, int] = {}
    for key, now in after.items():
        verdict, reason, _direction = key
        if verdict != VERDICT_DROPPED:
            continue
        then = before.get(key, 0)
        delta = now - then if now >= then else now
        if delta:
            out[reason] = out.get(reason, 0) + delta
    return out


def all_drops(before: MetricCounts, after: MetricCounts) -> int:
    return sum(drops_by_reason(before, after).values())


def policy_drops(before: MetricCounts, after: MetricCounts) -> int:
    """Policy drops (default or explicit deny) counted between two samples."""
    return sum(n for r, n in drops_by_reason(before, after).items() if r in POLICY_DROP_REASONS)


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
    drops: int  # every reason
    predicted: int  # of those, explained: the plan's cuts and the probes' own denied connections
    window_s: float
    threshold_per_s: float
    source: str = "counters"  # "flows" (the node's flow store) | "counters" (datapath MetricsMap)
    # unexpected drops by connection and reason, most first
    unexplained: tuple[tuple[tuple[DropKey, int], int], ...] = ()
    note: str = ""
    by_reason: tuple[tuple[int, int], ...] = ()  # (reason, packets) of every drop, most first

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
        reasons = ""
        if self.by_reason and any(r not in POLICY_DROP_REASONS for r, _ in self.by_reason):
            reasons = " (" + ", ".join(f"{n} {reason_name(r)}" for r, n in self.by_reason) + ")"
        text = (
            f"drop gate {self.node}: {self.drops} drops in {self.window_s:g}s{reasons}, "
            f"{self.predicted} predicted, {self.rate_per_s:.2f}/s unexpected "
            f"(threshold {self.threshold_per_s:g}/s): {verdict}"
        )
        if self.unexplained and not self.ok:
            shown = ", ".join(f"{describe_key(k)} x{n}" + _reason_suffix(r)
                              for (k, r), n in self.unexplained[:UNEXPECTED_SHOWN])
            more = len(self.unexplained) - UNEXPECTED_SHOWN
            text += f"; unexpected: {shown}" + (f" and {more} more" if more > 0 else "")
        return f"{text} ({self.note})" if self.note else text


def _reason_suffix(reason: int) -> str:
    return "" if reason in POLICY_DROP_REASONS else f" ({reason_name(reason)})"


def _most_first(counts: Mapping[int, int]) -> tuple[tuple[int, int], ...]:
    return tuple(sorted(((r, n) for r, n in counts.items() if n > 0), key=lambda rn: (-rn[1], rn[0])))


def drop_gate(
    node: str,
    before: MetricCounts,
    after: MetricCounts,
    window_s: float,
    threshold_per_s: float,
    predicted: int = 0,
    note: str = "",
) -> DropGateResult:
    """Judge one node's verify window from two MetricsMap samples: every drop reason counts.

    `predicted` is a number here (the counters cannot say which connection a drop hit): the
    policy drops the probes themselves witnessed, never more than the policy drops counted.
    """
    reasons = drops_by_reason(before, after)
    policy = sum(n for r, n in reasons.items() if r in POLICY_DROP_REASONS)
    return DropGateResult(node, sum(reasons.values()), min(predicted, policy), window_s, threshold_per_s,
                          note=note, by_reason=_most_first(reasons))


def no_flows_note(node: str) -> str:
    return (f"no flow agent on {node}: datapath counters only, "
            "the plan's predicted drops could not be subtracted")


def flow_drop_gate(
    node: str,
    dropped: DropCounts,
    predicted: Collection[DropKey],
    window_s: float,
    threshold_per_s: float,
    note: str = "",
    own: Mapping[DropKey, int] | None = None,
) -> DropGateResult:
    """Judge one node's verify window from its stored drops, by connection and reason.

    A drop is explained when its connection is one the plan predicts to cut (`predicted`) AND
    the datapath dropped it by policy; a predicted connection dropped for another reason (no
    endpoint, ...) is not what the plan meant. `own`: the policy drops the verify probes
    themselves caused and witnessed, by connection - exactly those packets are explained, not
    other traffic of the same connection. The rest are named when the gate fails.
    """
    own = own or {}
    total = sum(dropped.values())
    expected = 0
    rest: list[tuple[tuple[DropKey, int], int]] = []
    for (k, r), n in dropped.items():
        explained = 0
        if r in POLICY_DROP_REASONS:
            explained = n if k in predicted else min(n, own.get(k, 0))
        expected += explained
        if n - explained > 0:
            rest.append(((k, r), n - explained))
    rest.sort(key=lambda kn: (-kn[1], kn[0]))
    reasons: dict[int, int] = {}
    for (_k, r), n in dropped.items():
        reasons[r] = reasons.get(r, 0) + n
    return DropGateResult(node, total, expected, window_s, threshold_per_s, "flows", tuple(rest), note,
                          _most_first(reasons))
