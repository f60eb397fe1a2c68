"""Active verification: which real connections to make in a node's verify window, and how to judge them.

A quiet cluster drops nothing, so a drop gate alone verifies nothing. Every node of a wave that
has endpoints therefore gets probes while its window is open:
- the repo's ConnectivityChecks that the wave completes (gates.checks_for_wave);
- a deterministic sample of the plan's own connectivity impact: up to SAMPLE_EACH pairs that
  must now pass and SAMPLE_EACH that must now drop, among those the node enforces and whose
  nodes are all final (the same rule as checks: a pair spanning a node not yet applied tests a
  mix the desired state never describes);
- for a node that still lacks a probe expecting "allowed", or one expecting "denied" that its own
  datapath drops (not the peer's), up to
  FALLBACK_EACH pairs of that kind whose verdict the current mix of states decides (final nodes at
  their target, the others at their before-state), computed with the datapath emulator
  meshctl.verdicts: a datapath that allows everything fails a denied probe, one that drops
  everything fails an allowed one.

Expectations come from the same emulator: a pair is probed as "denied" only when a policy (default
or explicit deny) decides it, never when it would drop for lack of an endpoint.

Judging (`judge`): "allowed" is a completed connection. "denied" is a failed connection for
which the datapath recorded a policy drop (WitnessedDrop); a connection that failed for any other
reason - refused, no route, a drop with another reason, a missing pod - is an error and fails the
node whatever was expected.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable, Iterator, Mapping, Sequence
from dataclasses import dataclass, field
from ipaddress import IPv4Address
from itertools import chain
from typing import Protocol

from meshctl.apply.gates import (
    WORLD,
    CheckLike,
    CheckOutcome,
    DropKey,
    ImpactLike,
    WitnessedDrop,
    check_nodes,
    checks_for_wave,
    reason_name,
)
from meshctl.nodestate import PROTO_TCP, PROTO_UDP, NodeState
from meshctl.verdicts import ConnectionVerdict, connection_verdict

SAMPLE_EACH = 4  # impact pairs per node that must now pass, and as many that must now drop
FALLBACK_EACH = 2  # emulated pairs per node without any other probe, allowed and denied each
FALLBACK_BUDGET = 2000  # emulator calls per node at most while looking for fallback pairs
PROBED_PROTOCOLS = {"TCP": PROTO_TCP, "UDP": PROTO_UDP}  # what a probe can open from a pod
POLICY_REASONS = ("default-deny", "explicit-deny")


@dataclass(frozen=True)
class Probe:
    """One real connection to make; satisfies CheckLike. `nodes`: whose policy decides it."""

    name: str
    from_: str
    to: str
    port: int
    protocol: str
    expect: str  # "allowed" | "denied"
    origin: str = "check"  # "check" (the repo's), "impact" (the plan's), "probe" (emulated pair)
    nodes: tuple[str, ...] = ()

    @property
    def key(self) -> DropKey:
        return (self.from_, self.to, int(self.port), self.protocol.lower())


class PodLike(Protocol):
    """A pod as probes need it (meshctl.plan.impact.PodTarget)."""

    @property
    def name(self) -> str: ...

    @property
    def ip(self) -> IPv4Address: ...

    @property
    def ports(self) -> tuple[tuple[str, int], ...]: ...


@dataclass
class WaveProbes:
    """The probes of one wave, and for each wave node without any the reason why."""

    probes: list[Probe] = field(default_factory=list)
    unprobed: dict[str, str] = field(default_factory=dict)

    def count(self, node: str) -> int:
        return sum(node in p.nodes for p in self.probes)


VerdictFn = Callable[[Mapping[str, NodeState], IPv4Address, IPv4Address, int, int], ConnectionVerdict]


def expected(verdict: ConnectionVerdict) -> str | None:
    """"allowed", "denied" (a policy decides the drop), or None (drops for another reason)."""
    if verdict.allowed:
        return "allowed"
    sides = [v for v in (verdict.egress, verdict.ingress) if v is not None and not v.allowed]
    if sides and all(v.reason in POLICY_REASONS for v in sides):
        return "denied"
    return None


def _spread(items: Sequence[Probe], n: int) -> list[Probe]:
    """n items evenly spaced over the list (deterministic, not all from its head)."""
    if len(items) <= n:
        return list(items)
    return [items[i * len(items) // n] for i in range(n)]


def plan_wave_probes(
    wave_nodes: Sequence[str],
    final: Iterable[str],
    states: Mapping[str, NodeState],
    pods: Sequence[PodLike],
    pod_nodes: Mapping[str, str],
    checks: Iterable[CheckLike] = (),
    impact: Iterable[ImpactLike] = (),
    frontend_nodes: Mapping[str, tuple[str, ...]] | None = None,
    first_wave: bool = False,
    verdict_fn: VerdictFn | None = None,
) -> WaveProbes:
    """Every probe of a wave (see module doc). `states`: what each node should hold right now."""
    fn = verdict_fn or connection_verdict
    final_set = set(final)
    by_name = {p.name: p for p in pods}
    out = WaveProbes()
    seen: set[tuple[str, str, int, str]] = set()

    def add(probe: Probe) -> None:
        """Every repo check runs (two may contradict each other); other probes only add new pairs."""
        if probe.origin == "check" or probe.key not in seen:
            seen.add(probe.key)
            out.probes.append(probe)

    checks = list(checks)
    for planned in checks_for_wave(checks, pod_nodes, final_set, wave_nodes, frontend_nodes):
        c = planned.check
        add(Probe(c.name, c.from_, str(c.to), int(c.port), str(c.protocol), str(c.expect), "check",
                  planned.nodes))
    if first_wave:  # a check that names no pod of the cluster at either end can never run: say so once
        for c in checks:
            if not check_nodes(c, pod_nodes, frontend_nodes):
                add(Probe(c.name, c.from_, str(c.to), int(c.port), str(c.protocol), str(c.expect), "check",
                          tuple(wave_nodes)))

    def verdict(src: str, dst: str, proto: str, port: int) -> ConnectionVerdict | None:
        s, d = by_name.get(src), by_name.get(dst)
        if s is None or d is None or proto.upper() not in PROBED_PROTOCOLS:
            return None
        return fn(states, s.ip, d.ip, PROBED_PROTOCOLS[proto.upper()], port)

    def judged(src: str, dst: str, proto: str, port: int) -> str | None:
        v = verdict(src, dst, proto, port)
        return None if v is None else expected(v)

    def tests_on(probe: Probe) -> tuple[str, ...]:
        """The nodes whose own verdict a probe tests: for "denied", the side that drops the packet
        first (egress at the source, else ingress at the destination: a packet dropped on its way
        out never meets the destination's policy)."""
        v = verdict(probe.from_, probe.to, probe.protocol, probe.port) if probe.expect == "denied" else None
        if v is None:
            return probe.nodes
        for side, pod in ((v.egress, probe.from_), (v.ingress, probe.to)):
            if side is not None and not side.allowed:
                return (pod_nodes[pod],)
        return probe.nodes

    rows = [r for r in impact if r.src != WORLD and r.src in pod_nodes and r.dst in pod_nodes]
    for node in wave_nodes:
        if not states.get(node, NodeState(node)).endpoints:
            continue
        must = {"allowed": [], "denied": []}  # type: dict[str, list[Probe]]
        for r in rows:
            nodes = tuple(dict.fromkeys((pod_nodes[r.src], pod_nodes[r.dst])))
            if node not in nodes or not set(nodes) <= final_set:
                continue
            want = "allowed" if r.after == "FORWARDED" else "denied"
            if judged(r.src, r.dst, r.protocol, int(r.port)) != want:
                continue  # not probeable, or the emulator disagrees with the row (stale impact)
            name = "must now pass" if want == "allowed" else "must now drop"
            probe = Probe(name, r.src, r.dst, int(r.port), r.protocol.upper(), want, "impact", nodes)
            must[want].append(probe)
        for want in ("allowed", "denied"):
            for probe in _spread(must[want], SAMPLE_EACH):
                add(probe)
    for node in wave_nodes:
        if not states.get(node, NodeState(node)).endpoints:
            if not out.count(node):
                out.unprobed[node] = "no endpoints: nothing to probe"
            continue
        lacking = {"allowed", "denied"} - {p.expect for p in out.probes if node in tests_on(p)}
        def on_node(src: str, dst: str, proto: str, port: int, node: str = node) -> str | None:
            """The expectation of a pair as a test of this node: "denied" only if it drops here."""
            want = judged(src, dst, proto, port)
            if want == "denied" and node not in tests_on(Probe("", src, dst, port, proto, want)):
                return None
            return want

        for probe in _fallback(node, final_set, pods, pod_nodes, on_node, lacking):
            add(probe)
        if not out.count(node):
            out.unprobed[node] = "no pod pair with a declared port to probe"
    return out


def _candidates(node: str, final: set[str], pods: Sequence[PodLike],
                pod_nodes: Mapping[str, str]) -> Iterator[tuple[str, str, str, int, tuple[str, ...]]]:
    """Pod pairs the node enforces: same-node pairs first, then pairs whose other node is final."""
    local = [p for p in pods if pod_nodes.get(p.name) == node]
    others = sorted((p for p in pods if p.name in pod_nodes and pod_nodes[p.name] != node),
                    key=lambda p: (pod_nodes[p.name] not in final, p.name))
    pairs = chain(((s, d) for s in local for d in local), ((s, d) for s in local for d in others),
                  ((s, d) for d in local for s in others))  # lazily: a big cluster stops early
    for src, dst in pairs:
        if src.name == dst.name:
            continue
        nodes = tuple(dict.fromkeys((pod_nodes[src.name], pod_nodes[dst.name])))
        for proto, port in dst.ports:
            yield src.name, dst.name, proto.upper(), int(port), nodes


def _fallback(node: str, final: set[str], pods: Sequence[PodLike], pod_nodes: Mapping[str, str],
              judged: Callable[[str, str, str, int], str | None], kinds: Iterable[str]) -> list[Probe]:
    """Emulated pairs of each kind in `kinds` the node has no probe of yet."""
    found: dict[str, list[Probe]] = {kind: [] for kind in kinds}
    if not found:
        return []
    for budget, (src, dst, proto, port, nodes) in enumerate(_candidates(node, final, pods, pod_nodes)):
        if budget >= FALLBACK_BUDGET or all(len(v) >= FALLBACK_EACH for v in found.values()):
            break
        want = judged(src, dst, proto, port)
        if want not in found or len(found[want]) >= FALLBACK_EACH:
            continue
        if any(p.to == dst and p.port == port for p in found[want]):
            continue  # one pair per destination port: spread over the node's pods
        found[want].append(Probe(f"emulated {want}", src, dst, port, proto, want, "probe", nodes))
    return [p for kind in ("allowed", "denied") for p in found.get(kind, [])]


def judge(check: CheckLike, connected: bool, error: str, drops: Sequence[WitnessedDrop]) -> CheckOutcome:
    """What a real connection and the drops recorded for it say about the expectation."""
    drops = tuple(drops)
    if connected:
        return CheckOutcome(check, "allowed", "connected", drops)
    policy = [d for d in drops if d.policy]
    other = [d for d in drops if not d.policy]
    why = error or "failed"
    if policy and not other:
        d = policy[0]
        how = "flow store" if d.source == "flows" else "drop counters"
        detail = f"{why}; {reason_name(d.reason)} drop on {d.node} ({how})"
        return CheckOutcome(check, "denied", detail, drops)
    if other:
        seen = ", ".join(sorted({f"{reason_name(d.reason)} on {d.node}" for d in other}))
        return CheckOutcome(check, "error", f"connection {why}: the datapath dropped it with {seen}, "
                            "not by policy", drops)
    return CheckOutcome(check, "error", f"connection {why} but the datapath recorded no drop of it "
                        "(refused, no route or no server: not a policy verdict)", drops)


def missing(check: CheckLike, what: str) -> CheckOutcome:
    """A probe that could not even start: a pod that does not exist, an address nobody has."""
    return CheckOutcome(check, "error", what)
