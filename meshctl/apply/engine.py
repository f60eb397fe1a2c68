"""The apply engine: waves of nodes, journal first, make-before-break reconcile, verify, revert.

The engine knows no kernel and no file format. It drives three narrow interfaces - a
NodeDriver (observe, reconcile, drop counters), a Journal (intent records for crash recovery)
and a check runner (real connections) - so the orchestration is a plain function of their
answers. Per node: journal the intent with the exact before-state, push the undo, reconcile.
Per wave, inside the verify window: active probes (meshctl.apply.probes: the checks the wave
completes, a sample of the plan's impact, emulated pairs for a node that has no other), then the
drop gate over the whole window, which counts every drop reason except the plan's predicted cuts
and the probes' own denied connections. A failure reverts the wave (and with rollback "all"
every wave done so far) to the journalled before-states, newest first, and stops. A node is
reported "verified" only when at least one probe ran on it; otherwise it is "not verified", and
the reason says why (no endpoints: nothing to probe).

Progress: every step is a message to `on_event` (one line each when not on a terminal). A sink
that also has `phase(node, phase, wave)` (meshctl.cli.progress) is told each node's phase -
journal, reconcile, checks, drop gate, verified / not verified / failed / reverted - to show a
live display.
"""

from __future__ import annotations

import time
from collections.abc import Callable, Collection, Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Literal, Protocol

from meshctl.apply.crash import crash_point
from meshctl.apply.gates import (
    CheckLike,
    CheckOutcome,
    DropCounts,
    DropGateResult,
    DropKey,
    MetricCounts,
    all_drops,
    drop_gate,
    flow_drop_gate,
    no_flows_note,
)
from meshctl.apply.probes import ImpactLike, PodLike, Probe, WaveProbes, plan_wave_probes
from meshctl.apply.revert import RevertStack
from meshctl.apply.rollout import Wave, rollout_waves
from meshctl.errors import MeshctlError
from meshctl.nodestate import NodeState


class NodeDriver(Protocol):
    """The live side of every node (a lab, or later real hosts)."""

    def observe(self, node: str) -> NodeState: ...

    def reconcile(self, node: str, current: NodeState, target: NodeState) -> None: ...

    def drop_counts(self, node: str) -> MetricCounts: ...


class Journal(Protocol):
    """Crash-recovery records; `begin` must be durable before the node is touched."""

    def begin(self, node: str, before: NodeState, after: NodeState) -> None: ...

    def done(self, node: str) -> None: ...

    def reverted(self, node: str) -> None: ...


CheckRunner = Callable[[Probe], CheckOutcome]
# (node, since_ns, until_ns, drops the counters saw) -> the node's drops by connection and reason
# from its flow store, or None when no agent stores that node's flows (meshctl.apply.flowdrops).
FlowDropSource = Callable[[str, int, int, int], DropCounts | None]


@dataclass(frozen=True)
class NodeWork:
    """One node to move from `before` (observed, checked fresh) to `target`."""

    node: str
    before: NodeState
    target: NodeState


@dataclass(frozen=True)
class RolloutSettings:
    canary: tuple[str, ...] = ()
    batch_size: int = 1
    verify_window_s: float = 1.0
    drop_rate_threshold: float = 0.0
    rollback: Literal["node", "all"] = "node"


@dataclass
class ApplyResult:
    """What happened, node by node; `ok` False means the rollout stopped."""

    ok: bool = True
    waves: list[Wave] = field(default_factory=list)
    applied: list[str] = field(default_factory=list)  # at target now (kept)
    reverted: list[str] = field(default_factory=list)  # back at their before-state
    revert_failures: list[str] = field(default_factory=list)
    failure: str = ""
    checks: list[CheckOutcome] = field(default_factory=list)  # every probe run, checks included
    gates: list[DropGateResult] = field(default_factory=list)
    verified: dict[str, int] = field(default_factory=dict)  # node -> probes that ran on it
    unverified: dict[str, str] = field(default_factory=dict)  # applied node -> why no probe ran

    def summary(self) -> str:
        if self.ok:
            text = f"Apply complete: {len(self.applied)} node(s) updated"
            kept = [n for n in self.applied if n in self.verified]
            if kept:
                text += f", {len(kept)} verified by {len(self.checks)} probe(s)"
            lines = [text + "."]
            unverified = [f"{n} ({why})" for n, why in self.unverified.items() if n in self.applied]
            if unverified:
                lines.append(f"Not verified (applied, no probe ran): {', '.join(unverified)}.")
            return "\n".join(lines)
        lines = [f"Apply failed: {self.failure}"]
        if self.reverted:
            lines.append(f"Reverted to the exact before-state: {', '.join(self.reverted)}.")
        if self.applied:
            lines.append(f"Kept (applied and verified earlier): {', '.join(self.applied)}.")
        for failure in self.revert_failures:
            lines.append(f"Revert FAILED: {failure} (run `meshctl recover`)")
        return "\n".join(lines)


Event = Callable[[str], None]
PHASES = ("waiting", "journal", "reconcile", "checks", "drop gate", "verified")
UNVERIFIED = "not verified"  # a final phase like "verified": applied, but no probe ran on the node


class ApplyEngine:
    def __init__(
        self,
        driver: NodeDriver,
        journal: Journal,
        run_check: CheckRunner,
        settings: RolloutSettings,
        on_event: Event | None = None,
        sleep: Callable[[float], None] = time.sleep,
        flow_drops: FlowDropSource | None = None,
        now_ns: Callable[[], int] = time.time_ns,
    ) -> None:
        self.driver, self.journal, self.run_check, self.settings = driver, journal, run_check, settings
        self.on_event = on_event or (lambda _msg: None)
        self._phase_sink: Callable[[str, str, str], None] | None = getattr(on_event, "phase", None)
        self.sleep, self.flow_drops, self.now_ns = sleep, flow_drops, now_ns

    def _phase(self, nodes: Iterable[str], phase: str, wave: str = "") -> None:
        if self._phase_sink is not None:
            for node in nodes:
                self._phase_sink(node, phase, wave)

    def run(
        self,
        work: Sequence[NodeWork],
        node_order: Sequence[str],
        checks: Iterable[CheckLike] = (),
        pod_nodes: Mapping[str, str] | None = None,
        predicted_drops: Mapping[str, int] | None = None,
        frontend_nodes: Mapping[str, tuple[str, ...]] | None = None,
        predicted_keys: Collection[DropKey] = (),
        pods: Sequence[PodLike] = (),
        impact: Iterable[ImpactLike] = (),
    ) -> ApplyResult:
        """Apply `work` in rollout order; verify; revert and stop on the first failure.

        `predicted_keys`: connections the plan means to cut (gates.predicted_drop_keys of its
        impact); their drops do not count against the drop gate when the flow store is read.
        `pods` (name, address, declared ports) and `impact` (the plan's rows) feed the probes.
        """
        by_node = {w.node: w for w in work if w.before != w.target}
        s = self.settings
        waves = rollout_waves(node_order, s.canary, s.batch_size, changed=by_node)
        result = ApplyResult(waves=waves)
        ctx = _VerifyContext(
            {w.node: w for w in work}, list(checks), pod_nodes or {}, predicted_drops or {},
            frontend_nodes or {}, frozenset(predicted_keys), list(pods), list(impact),
        )
        final = set(node_order) - set(by_node)  # nodes without changes are final from the start
        kept = RevertStack()  # waves done, reverted too only with rollback "all"
        for wave in waves:
            self._phase(wave.nodes, "waiting", wave.label)
            self.on_event(f"applying {wave.label}")
            stack = RevertStack()
            failure = self._apply_wave(wave, by_node, stack)
            probes = WaveProbes()
            if not failure:
                final |= set(wave.nodes)
                try:
                    failure, probes = self._verify_wave(wave, ctx, final, result)
                except MeshctlError as err:
                    failure = f"verification of {wave.label} failed: {err}"
            if failure:
                result.ok, result.failure = False, failure
                self.on_event(f"FAILED: {failure}; reverting {', '.join(wave.nodes)}")
                self._phase(wave.nodes, "failed")
                self._revert(stack, result)
                if s.rollback == "all":
                    self._revert(kept, result)
                return result
            for node in wave.nodes:
                self.journal.done(node)
                result.applied.append(node)
            crash_point(f"verified:{wave.index}")
            self._report_verified(wave, probes, result)
            if s.rollback == "all":
                kept.extend(stack)
            else:
                stack.clear()
        return result

    def _report_verified(self, wave: Wave, probes: WaveProbes, result: ApplyResult) -> None:
        """"verified" only for a node on which at least one probe ran; the others say why not."""
        for node in wave.nodes:
            count = probes.count(node)
            if count:
                result.verified[node] = count
                self._phase([node], "verified")
            else:
                why = probes.unprobed.get(node, "no probe ran")
                result.unverified[node] = why
                self._phase([node], UNVERIFIED)
                self.on_event(f"node {node}: applied, not verified: {why}")
        done = [n for n in wave.nodes if n in result.verified]
        if len(done) == len(wave.nodes):
            self.on_event(f"{wave.label}: verified")
        else:
            self.on_event(f"{wave.label}: applied, {len(done)} of {len(wave.nodes)} node(s) verified")

    def _apply_wave(self, wave: Wave, by_node: Mapping[str, NodeWork], stack: RevertStack) -> str:
        for node in wave.nodes:
            w = by_node[node]
            self._phase([node], "journal")
            self.journal.begin(node, w.before, w.target)
            crash_point(f"begin:{node}")
            stack.push(node, lambda w=w: self._restore(w))
            self._phase([node], "reconcile")
            try:
                self.driver.reconcile(node, w.before, w.target)
            except Exception as err:  # half-applied: the undo below restores the before-state
                return f"node {node}: reconcile failed: {err}"
            crash_point(f"reconciled:{node}")
            self.on_event(f"node {node}: reconciled")
        return ""

    def _verify_wave(
        self, wave: Wave, ctx: _VerifyContext, final: set[str], result: ApplyResult
    ) -> tuple[str, WaveProbes]:
        """Probes inside the verify window, then the drop gate over the whole window."""
        s = self.settings
        states = {n: (w.target if n in final else w.before) for n, w in ctx.work.items()}
        probes = plan_wave_probes(wave.nodes, final, states, ctx.pods, ctx.pod_nodes, ctx.checks, ctx.impact,
                                  ctx.frontend_nodes, first_wave=wave.index == 0)
        self._phase(wave.nodes, "checks")
        before = {n: self.driver.drop_counts(n) for n in wave.nodes}
        since, started = self.now_ns(), time.monotonic()
        failures = []
        outcomes = []
        for probe in probes.probes:
            try:
                outcome = self.run_check(probe)
            except MeshctlError as err:  # a probe that cannot run is a check error, not a crash
                outcome = CheckOutcome(probe, "error", str(err))
            outcomes.append(outcome)
            result.checks.append(outcome)
            self.on_event(outcome.describe())
            if not outcome.ok:
                failures.append(outcome.describe())
        remaining = s.verify_window_s - (time.monotonic() - started)
        if remaining > 0:
            self.sleep(remaining)
        until = self.now_ns()
        crash_point(f"probed:{wave.index}")
        self._phase(wave.nodes, "drop gate")
        denied = [o for o in outcomes if o.ok and o.observed == "denied"]  # the probes' own drops
        for node in wave.nodes:
            # counters cannot tell a probe's drop from a concurrent one: one packet per denied probe
            counted = sum(any(d.node == node and d.policy for d in o.drops) for o in denied)
            own: dict[DropKey, int] = {}
            for o in denied:
                packets = sum(d.packets for d in o.drops
                              if d.node == node and d.policy and d.source == "flows")
                if packets:
                    own[_key(o.check)] = own.get(_key(o.check), 0) + packets
            predicted = ctx.predicted.get(node, 0) + counted
            gate = self._drop_gate(node, before[node], since, until, predicted, ctx.predicted_keys, own)
            result.gates.append(gate)
            self.on_event(gate.describe())
            if not gate.ok:
                failures.append(gate.describe())
        crash_point(f"gated:{wave.index}")
        return "; ".join(failures), probes

    def _drop_gate(self, node: str, before: MetricCounts, since_ns: int, until_ns: int, predicted: int,
                   predicted_keys: frozenset[DropKey], own: Mapping[DropKey, int]) -> DropGateResult:
        """The flow store's drops by connection when the node's agent runs, else the counters."""
        s = self.settings
        after = self.driver.drop_counts(node)
        counted = all_drops(before, after)
        flows = self.flow_drops(node, since_ns, until_ns, counted) if self.flow_drops else None
        if flows is None:
            return drop_gate(node, before, after, s.verify_window_s, s.drop_rate_threshold, predicted,
                             note=no_flows_note(node))
        return flow_drop_gate(node, flows, predicted_keys, s.verify_window_s, s.drop_rate_threshold, own=own)

    def _restore(self, w: NodeWork) -> None:
        """Reconcile a node back to its journalled before-state and prove it got there."""
        restore_node(self.driver, w.node, w.before)
        self.journal.reverted(w.node)

    def _revert(self, stack: RevertStack, result: ApplyResult) -> None:
        nodes = list(reversed(stack.descriptions))
        failures = stack.revert()
        failed = {f.description for f in failures}
        result.revert_failures += [str(f) for f in failures]
        for node in nodes:
            if node not in failed:
                result.reverted.append(node)
                self._phase([node], "reverted")
                self.on_event(f"node {node}: reverted to its before-state")
        result.applied = [n for n in result.applied if n not in nodes]


@dataclass(frozen=True)
class _VerifyContext:
    """What verification needs besides the wave: the whole rollout's inputs."""

    work: Mapping[str, NodeWork]
    checks: list[CheckLike]
    pod_nodes: Mapping[str, str]
    predicted: Mapping[str, int]
    frontend_nodes: Mapping[str, tuple[str, ...]]
    predicted_keys: frozenset[DropKey]
    pods: list[PodLike]
    impact: list[ImpactLike]


def _key(check: CheckLike) -> DropKey:
    return (check.from_, str(check.to), int(check.port), str(check.protocol).lower())


def restore_node(driver: NodeDriver, node: str, before: NodeState) -> None:
    """Reconcile `node` to `before` from whatever it is now; raise unless it matches exactly."""
    driver.reconcile(node, driver.observe(node), before)
    now = driver.observe(node)
    if now != before:
        raise MeshctlError(
            f"node {node}: after revert the live state {now.fingerprint()} differs from the "
            f"before-state {before.fingerprint()}"
        )
