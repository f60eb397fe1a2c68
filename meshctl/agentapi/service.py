"""What the agent API does for its node, apart from HTTP: observe, apply, revert, verify.

Apply runs the apply engine itself on a one-node rollout (journal the intent with the exact
before-state, reconcile make-before-break, revert to the before-state if reconcile fails), so a
node driven remotely goes through the very step a local apply uses. The node journal lives on the
node: if the agent dies mid-apply, the records say what to restore. Verification (drop gate and
checks from this node's pods) reuses meshctl.apply.gates and the lab's check runner; each check
answers with its connection's exact 5-tuple and window, so the caller can ask the agents of the
other nodes the connection crossed whether their datapath dropped it (`flow_drops`).
"""

from __future__ import annotations

import logging
import math
import threading
import time
from collections.abc import Callable, Mapping, Sequence
from contextlib import nullcontext
from pathlib import Path
from typing import Any

from meshctl.agentapi.applied import clear_share, read_share, write_share
from meshctl.agentapi.endpoints import EndpointSync, read_intent, write_intent
from meshctl.agentapi.protocol import WireCheck, counts_to_json
from meshctl.agentapi.session import ApplySession, lease_of, load_session, save_session
from meshctl.apply.engine import ApplyEngine, NodeDriver, NodeWork, RolloutSettings, restore_node
from meshctl.apply.gates import CheckLike, CheckOutcome, ProbeAttempt, WitnessedDrop, drop_gate
from meshctl.compile.intent import NodeIntent
from meshctl.connections import TrackedConnection
from meshctl.dataplane.dnsproxy import DnsFiles, clean_cache, fqdn_cache
from meshctl.fqdnmatch import pattern_error
from meshctl.nodestate import NodeState
from meshctl.source.runtime import RuntimeInventory

log = logging.getLogger(__name__)
CheckRunner = Callable[[CheckLike], CheckOutcome]
FlowDrops = Callable[[ProbeAttempt], list[WitnessedDrop]]  # this node's recorded drops of a connection
MAX_VERIFY_WINDOW_S = 60.0
MAX_ATTEMPTS = 256


class Refused(Exception):
    """A request the agent answers with a 4xx status and a JSON body."""

    def __init__(self, status: int, message: str, **extra: Any) -> None:
        super().__init__(message)
        self.status, self.extra = status, extra


def _no_checks(check: CheckLike) -> CheckOutcome:  # pragma: no cover - apply passes no checks
    raise AssertionError("apply runs no checks; verify does")


class NodeService:
    """One node's API operations over a NodeDriver; one mutation at a time."""

    def __init__(
        self,
        node: str,
        driver: NodeDriver,
        journal_dir: Path,
        node_pods: Callable[[], Mapping[str, Any]] = dict,
        check_runner: Callable[[], CheckRunner] | None = None,
        sleep: Callable[[float], None] = time.sleep,
        conntrack: Callable[[], Sequence[TrackedConnection]] = tuple,
        flow_drops: FlowDrops | None = None,
        window_drops: Callable[[int, int, int], list[list[Any]]] | None = None,
        dns_files: DnsFiles | None = None,
    ) -> None:
        self.dns_files = dns_files  # the node's DNS proxy (its learned IPs)
        self.node, self.driver, self.journal_dir = node, driver, journal_dir
        self.node_pods, self.check_runner, self.sleep = node_pods, check_runner, sleep
        self.conntrack, self.flow_drops, self.window_drops = conntrack, flow_drops, window_drops
        self.lock = threading.Lock()
        # the apply session holding the node (meshctl.agentapi.session): kept on disk, so an
        # agent restarted meanwhile still reverts the node when the lease runs out
        self.session: ApplySession | None = load_session(journal_dir)
        # the endpoint ids this agent gave its node's pods (a cluster's agents allocate them,
        # meshctl.agentapi.kubeinventory): the CLI compiles with the same numbers
        self.endpoint_ids: Callable[[], Mapping[str, Any]] | None = None

    def _journal(self, plan_id: str = "") -> Any:
        from meshctl.state import Journal

        return Journal(self.journal_dir, plan_id)

    def observe(self) -> dict[str, Any]:
        with self.lock:
            state = self.driver.observe(self.node)
        return {"node": self.node, "state": state.canonical(), "fingerprint": state.fingerprint(),
                "interrupted": bool(self._journal().records()),
                "foreign_programs": [p.__dict__ for p in state.foreign_programs]}

    def connections(self) -> dict[str, Any]:
        """The node's live established connections (for the plan's "cuts N established")."""
        return {"node": self.node, "connections": [c.to_json() for c in self.conntrack()]}

    def fqdn_cache(self) -> dict[str, Any]:
        """The IPs the node's DNS proxy learned (`meshctl fqdn cache list`)."""
        ips = fqdn_cache(self.dns_files) if self.dns_files else []
        return {"node": self.node, "ips": [c.to_json() for c in ips]}

    def fqdn_clean(self, body: Mapping[str, Any]) -> dict[str, Any]:
        pattern = body.get("pattern", "")
        if not isinstance(pattern, str) or (pattern and pattern_error(pattern)):
            raise Refused(400, f"pattern: {pattern!r} is not a matchPattern")
        removed = clean_cache(self.dns_files, pattern) if self.dns_files else []
        return {"node": self.node, "removed": removed}

    def drops(self) -> dict[str, Any]:
        with self.lock:
            return {"node": self.node, "counts": counts_to_json(self.driver.drop_counts(self.node))}

    def _target(self, body: Mapping[str, Any], key: str) -> NodeState:
        try:
            state = NodeState.from_canonical(body[key])
        except (KeyError, TypeError, ValueError) as err:
            raise Refused(400, f"{key}: not a canonical NodeState ({type(err).__name__}: {err})") from None
        if state.node != self.node:
            raise Refused(400, f"{key}: a state of node {state.node!r}, this is {self.node!r}")
        return state

    def apply(self, body: Mapping[str, Any]) -> dict[str, Any]:
        """Move the node to `target` iff it is still at `expected_fingerprint` (else 409). With
        `session` ({"id", "lease_s"}) the node is held: back at the session's before-state unless
        the lease is renewed or the session ended (a revert to that state ends it too)."""
        target = self._target(body, "target")
        expected = body.get("expected_fingerprint")
        if not isinstance(expected, str):
            raise Refused(400, "expected_fingerprint: required (the fingerprint the plan was made from)")
        lease = None
        if body.get("session") is not None:
            try:
                lease = lease_of(body["session"])
            except ValueError as err:
                raise Refused(400, str(err)) from None
        with self.lock:
            held = self.session
            if held is not None and (lease is None or held.id != lease[0]):
                raise self._held_by(held)
            journal = self._journal(str(body.get("plan_id", "")))
            self._refuse_if_interrupted(journal)
            current = self.driver.observe(self.node)
            live = current.fingerprint()
            if live != expected:
                raise Refused(409, f"node {self.node} changed since it was planned: live {live}, "
                              f"expected {expected}", fingerprint=live)
            settings = RolloutSettings(verify_window_s=0.0, drop_rate_threshold=math.inf)
            engine = ApplyEngine(self.driver, journal, _no_checks, settings, sleep=lambda _s: None)
            result = engine.run([NodeWork(self.node, current, target)], [self.node])
            if lease is not None:  # held until the session ends, or reverted when it goes silent
                before = held.before if held is not None else current
                self._hold(ApplySession(lease[0], before, time.time() + lease[1]))
            if result.ok or not result.revert_failures:
                journal.clear()  # at target, or back at the before-state: nothing to recover
            now = self.driver.observe(self.node)
        return {"ok": result.ok, "changed": current != target, "failure": result.failure,
                "reverted": self.node in result.reverted, "revert_failures": result.revert_failures,
                "before_fingerprint": current.fingerprint(), "fingerprint": now.fingerprint(),
                "held": self.session is not None}

    def revert(self, body: Mapping[str, Any]) -> dict[str, Any]:
        """Put the node back at `before` from wherever it is, and prove it (exact match)."""
        before = self._target(body, "before")
        with self.lock:
            restore_node(self.driver, self.node, before)  # raises unless the live state equals `before`
            self._hold(None)
            journal = self._journal()
            if journal.records():
                journal.reverted(self.node)
                journal.clear()
        return {"ok": True, "fingerprint": before.fingerprint()}

    def intent(self, body: Mapping[str, Any]) -> dict[str, Any]:
        """Keep the intent the node's applied state was compiled from, iff the node is at the
        state of `fingerprint` (the apply's target); the endpoint sync follows pods under it."""
        intent = _intent(body)
        fingerprint = body.get("fingerprint")
        if intent is None or not isinstance(fingerprint, str):
            raise Refused(400, "intent and fingerprint: required")
        self._keep_at(fingerprint, lambda: write_intent(self.journal_dir, intent))
        return {"ok": True, "plan_id": intent.plan_id}

    def held_intent(self) -> dict[str, Any]:
        try:
            intent = read_intent(self.journal_dir)
        except ValueError as err:
            raise Refused(500, f"the node's intent is unreadable: {err}") from None
        return {"node": self.node, "intent": intent.to_json() if intent is not None else None}

    def record_share(self, body: Mapping[str, Any]) -> dict[str, Any]:
        """Keep the node's share of the state an apply recorded (meshctl.state.cluster), iff the
        node is at the state the share's record names."""
        from meshctl.state.cluster import share_of

        try:
            share = share_of(body.get("share"), self.node)
        except ValueError as err:
            raise Refused(400, f"share: {err}") from None
        applied = share.nodes[self.node].fingerprint
        self._keep_at(applied, lambda: write_share(self.journal_dir, body["share"]))
        return {"ok": True, "serial": share.serial}

    def _keep_at(self, expected: str, keep: Callable[[], None]) -> None:
        """Run `keep` (a write of what an apply left here) iff the node is at the applied state
        `expected`, under the service's lock; 409 otherwise."""
        with self.lock:
            live = self.driver.observe(self.node).fingerprint()
            if live != expected:
                raise Refused(409, f"node {self.node} is not at the applied state: live {live}, "
                              f"expected {expected}", fingerprint=live)
            keep()

    def held_share(self) -> dict[str, Any]:
        """The node's share of the state (null: nothing applied here, or uninstalled)."""
        try:
            raw = read_share(self.journal_dir)
        except ValueError as err:
            raise Refused(500, f"the node's share of the state is unreadable: {err}") from None
        return {"node": self.node, "share": raw}

    def endpoint_table(self) -> dict[str, Any]:
        """{"endpoint_ids": EndpointTable.as_dict() of this node, or null when the agent allocates none}."""
        table = None if self.endpoint_ids is None else dict(self.endpoint_ids())
        return {"node": self.node, "endpoint_ids": table}

    def endpoint_sync(self, inventory: Callable[[], RuntimeInventory | None],
                      also_busy: Callable[[], bool] = lambda: False) -> EndpointSync:
        """This node's endpoint lifecycle: it shares the service's lock and the driver's writer
        lock, and waits while an apply session holds the node (or `also_busy` says so)."""
        writer = getattr(self.driver, "writer", None)
        return EndpointSync(self.node, self.driver, self.journal_dir, inventory, lock=self.lock,
                            writer=(lambda: writer(self.node)) if writer else nullcontext,
                            busy=lambda: self.applying() or also_busy())

    def applying(self) -> bool:
        """An apply session holds this node (the endpoint sync waits for it)."""
        return self.session is not None

    def open_session(self, body: Mapping[str, Any]) -> dict[str, Any]:
        """Lock the node for an apply session before it is observed for the plan's freshness:
        the node's before-state is the live one, and no other session may apply meanwhile (409
        with the holder). The session's own id renews it."""
        try:
            session_id, lease = lease_of(body)
        except ValueError as err:
            raise Refused(400, str(err)) from None
        with self.lock:
            held = self.session
            if held is not None and held.id != session_id:
                raise self._held_by(held)
            self._refuse_if_interrupted(self._journal())
            before = held.before if held is not None else self.driver.observe(self.node)
            self._hold(ApplySession(session_id, before, time.time() + lease))
        return {"ok": True, "held": True}

    @staticmethod
    def _refuse_if_interrupted(journal: Any) -> None:
        """409 while the journal of an apply that did not finish says what to restore first."""
        if journal.records():
            raise Refused(409, "an apply on this node was interrupted: revert it first (to the "
                          "journalled before-state)", interrupted=True)

    def _held_by(self, held: ApplySession) -> Refused:
        until = time.strftime('%H:%M:%S', time.localtime(held.deadline))
        return Refused(409, f"node {self.node} is held by apply session {held.id} until {until} "
                       "(another apply is running)", held=held.id)

    def renew(self, body: Mapping[str, Any]) -> dict[str, Any]:
        """Extend the lease of the session holding the node; 409 when it holds it no more (the
        lease ran out and the node went back, or the session ended)."""
        try:
            session_id, lease = lease_of(body)
        except ValueError as err:
            raise Refused(400, str(err)) from None
        with self.lock:
            if self.session is None or self.session.id != session_id:
                raise Refused(409, f"apply session {session_id} no longer holds node {self.node}")
            self._hold(self.session.renewed(lease))
        return {"ok": True}

    def end_session(self, body: Mapping[str, Any]) -> dict[str, Any]:
        """The rollout is recorded: the node stays where the session left it."""
        session_id = body.get("id")
        with self.lock:
            if self.session is None or self.session.id != session_id:
                raise Refused(409, f"apply session {session_id} no longer holds node {self.node}")
            self._hold(None)
        return {"ok": True}

    def expire(self) -> bool:
        """Revert the node to the held before-state once the lease ran out; True when it did."""
        with self.lock:
            held = self.session
            if held is None or not held.expired():
                return False
            log.warning("node %s: apply session %s went silent: reverting to its before-state",
                        self.node, held.id)
            restore_node(self.driver, self.node, held.before)
            self._hold(None)
            journal = self._journal()
            if journal.records():
                journal.clear()
        return True

    def watch_sessions(self, stop: threading.Event, interval_s: float = 0.2) -> threading.Thread:
        def run() -> None:
            while not stop.wait(interval_s):
                try:
                    self.expire()
                except Exception as err:  # the next tick tries again; the node stays held
                    log.error("node %s: revert of an expired apply session failed: %s", self.node, err)

        thread = threading.Thread(target=run, name=f"sessions-{self.node}", daemon=True)
        thread.start()
        return thread

    def _hold(self, session: ApplySession | None) -> None:
        save_session(self.journal_dir, session)
        self.session = session

    def uninstall(self) -> dict[str, Any]:
        """Remove everything meshctl made on the node (the driver's `uninstall`); refused while an
        interrupted apply's journal says what to restore first."""
        remove = getattr(self.driver, "uninstall", None)
        if remove is None:
            raise Refused(501, f"node {self.node}: this agent's driver cannot uninstall")
        with self.lock:
            self._refuse_if_interrupted(self._journal())
            before = remove(self.node)
            clear_share(self.journal_dir)  # nothing of meshctl's is applied here any more
        return {"ok": True, "before": before.canonical()}

    def verify(self, body: Mapping[str, Any]) -> dict[str, Any]:
        """The drop gate over `window_s`, then each check as a real connection from a pod here."""
        try:
            checks = [WireCheck.from_json(c) for c in body.get("checks", [])]
            window = float(body.get("window_s", 0.0))
            threshold = float(body.get("threshold_per_s", 0.0))
            predicted = int(body.get("predicted", 0))
        except (TypeError, ValueError) as err:
            raise Refused(400, str(err)) from None
        if not 0 <= window <= MAX_VERIFY_WINDOW_S:
            raise Refused(400, f"window_s must be within 0..{MAX_VERIFY_WINDOW_S:g}")
        if checks:
            pods = self.node_pods()
            foreign = [c.from_ for c in checks if c.from_ not in pods]
            if foreign:
                raise Refused(400, f"checks must start at a pod of node {self.node}: {', '.join(foreign)} "
                              f"(pods here: {', '.join(sorted(pods)) or 'none'})")
        with self.lock:
            first = self.driver.drop_counts(self.node)
        self.sleep(window)
        with self.lock:
            second = self.driver.drop_counts(self.node)
        gate = drop_gate(self.node, first, second, window, threshold, predicted)
        outcomes = []
        if checks:
            if self.check_runner is None:
                raise Refused(400, f"node {self.node} cannot run checks here (no pods known)")
            run = self.check_runner()
            outcomes = [run(c) for c in checks]
        ok = gate.ok and all(o.ok for o in outcomes)
        return {
            "ok": ok,
            "gate": {"node": gate.node, "drops": gate.drops, "predicted": gate.predicted,
                     "window_s": gate.window_s, "threshold_per_s": gate.threshold_per_s, "ok": gate.ok,
                     "describe": gate.describe()},
            "checks": [_outcome_json(o) for o in outcomes],
        }

    def drops_of(self, body: Mapping[str, Any]) -> dict[str, Any]:
        """This node's recorded drops of each connection in `attempts` (ProbeAttempt JSON), or
        with `since_ns`/`until_ns` every drop of that window (the drop gate's source)."""
        if "since_ns" in body:
            return self._window(body)
        try:
            attempts = [ProbeAttempt.from_json(a) for a in body.get("attempts", [])]
        except (KeyError, TypeError, ValueError, AttributeError) as err:
            raise Refused(400, f"attempts: {err}") from None
        if len(attempts) > MAX_ATTEMPTS:
            raise Refused(400, f"at most {MAX_ATTEMPTS} attempts per call")
        if self.flow_drops is None:
            return {"node": self.node, "source": "none", "drops": [[] for _ in attempts]}
        found = [self.flow_drops(a) for a in attempts]
        return {"node": self.node, "source": "flows",
                "drops": [[[d.reason, d.packets, d.source] for d in drops] for drops in found]}


    def _window(self, body: Mapping[str, Any]) -> dict[str, Any]:
        try:
            since, until, counted = int(body["since_ns"]), int(body["until_ns"]), int(body.get("counted", 0))
        except (KeyError, TypeError, ValueError) as err:
            raise Refused(400, f"since_ns/until_ns: {err}") from None
        if self.window_drops is None:
            return {"node": self.node, "source": "none", "rows": None}
        return {"node": self.node, "source": "flows", "rows": self.window_drops(since, until, counted)}


def _intent(body: Mapping[str, Any]) -> NodeIntent | None:
    raw = body.get("intent")
    if not isinstance(raw, Mapping):
        return None
    try:
        return NodeIntent.from_json(raw)
    except ValueError as err:
        raise Refused(400, f"intent: {err}") from None


def _outcome_json(o: CheckOutcome) -> dict[str, Any]:
    out: dict[str, Any] = {"check": WireCheck.of(o.check).to_json(), "observed": o.observed,
                           "detail": o.detail, "ok": o.ok,
                           "drops": [[d.node, d.reason, d.packets, d.source] for d in o.drops]}
    if o.attempt is not None:
        out["attempt"] = o.attempt.to_json()
    return out
