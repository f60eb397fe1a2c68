"""The agent's endpoint lifecycle: keep the node in step with the pods under the applied intent.

Between applies pods start and stop. The agent compiles the intent the node holds (written by
the last apply, meshctl.compile.intent) with the inventory as it is now, and reconciles the node
to the result, as Cilium's agent creates an endpoint when the CNI adds a pod and regenerates the
policy of the endpoints a new identity concerns. It acts only when the intent or the inventory
changed since its last sync, so a hand-made change on the node stays visible to drift.

It writes nothing while an apply holds the repo's state lock (`busy`), and takes the node's
writer lock around observe-and-reconcile, so an apply and a sync never interleave on a node.
With no intent on the node (nothing applied and `lab up` did not open it), it does nothing: the
node stays closed rather than open under no policy.
"""

from __future__ import annotations

import json
import logging
import threading
import time
from collections.abc import Callable
from contextlib import AbstractContextManager, nullcontext
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Protocol

from meshctl.compile.identities import EndpointTable, IdentityTable
from meshctl.compile.intent import NodeIntent
from meshctl.compile.spec import PodSpec, row_specs
from meshctl.gcpause import paused_gc
from meshctl.nodestate import NodeState
from meshctl.source.runtime import RuntimeInventory
from meshctl.state.atomic import atomic_write

log = logging.getLogger(__name__)
INTENT_FILE = "intent.json"
SYNC_FILE = "endpoints.json"  # {"revision", "plan_id", "synced_at", "endpoints"}: `lab pod add` waits on it


class SyncDriver(Protocol):
    def observe(self, node: str) -> NodeState: ...

    def reconcile(self, node: str, current: NodeState, target: NodeState) -> None: ...


def agent_dir(state_dir: Path, node: str) -> Path:
    """A node agent's files (journal, intent, sync status) under a repo's state dir (the lab's
    agents run with `-C REPO`)."""
    return state_dir / "agents" / node


def read_intent(directory: Path) -> NodeIntent | None:
    """The intent the node holds, or None (never applied). A corrupt file raises ValueError."""
    try:
        raw = (directory / INTENT_FILE).read_bytes()
    except FileNotFoundError:
        return None
    return NodeIntent.from_json(json.loads(raw))


def write_intent(directory: Path, intent: NodeIntent) -> None:
    atomic_write(directory / INTENT_FILE, intent.to_text().encode())


def synced_revision(directory: Path) -> int:
    """The inventory revision the node's agent last brought the node to (-1: none yet)."""
    try:
        return int(json.loads((directory / SYNC_FILE).read_bytes())["revision"])
    except (OSError, ValueError, KeyError, TypeError):
        return -1


@dataclass
class SyncResult:
    revision: int
    changed: bool
    endpoints: int
    seconds: float


class EndpointSync:
    """One node's endpoints, identities and ipcache, following the inventory."""

    def __init__(self, node: str, driver: SyncDriver, directory: Path,
                 inventory: Callable[[], RuntimeInventory | None],
                 lock: AbstractContextManager[Any] | None = None,
                 writer: Callable[[], AbstractContextManager[Any]] = nullcontext,
                 busy: Callable[[], bool] = lambda: False, interval_s: float = 0.05) -> None:
        self.node, self.driver, self.directory = node, driver, directory
        self.inventory, self.lock, self.writer, self.busy = inventory, lock or threading.Lock(), writer, busy
        self.interval_s = interval_s
        self._done: tuple[Any, ...] | None = None
        self._intent: tuple[tuple[int, int, int], NodeIntent] | None = None
        self._memo: Any = None
        self._last: NodeState | None = None
        self._specs: dict[str, Any] = {}  # pod key -> (row, PodSpec): new pods only are converted

    def _pod_specs(self, inventory: RuntimeInventory) -> tuple[PodSpec, ...]:
        specs = row_specs(inventory.rows, self._specs)
        if len(self._specs) > 2 * len(specs) + 1024:  # forget pods long gone
            keep = {s.key for s in specs}
            self._specs = {k: v for k, v in self._specs.items() if k in keep}
        return specs

    def _current_intent(self) -> tuple[tuple[int, int, int], NodeIntent] | None:
        try:
            st = (self.directory / INTENT_FILE).stat()
        except FileNotFoundError:
            return None
        stamp = (st.st_mtime_ns, st.st_size, st.st_ino)
        if self._intent is None or self._intent[0] != stamp:
            intent = read_intent(self.directory)
            if intent is None:
                return None
            self._intent = (stamp, intent)
        return self._intent

    @paused_gc()  # a compile and a diff of 10,000 pods' entries: acyclic objects only
    def sync(self) -> SyncResult | None:
        """One step: None when there is nothing to do (or an apply is in progress)."""
        held = self._current_intent()
        inventory = self.inventory()
        if held is None or inventory is None:
            return None
        stamp, intent = held
        key = (stamp, inventory.revision)
        if key == self._done or self.busy():
            return None
        started = time.monotonic()
        namespaces = {ns.name: dict(ns.labels) for ns in inventory.namespaces}
        target, compiled = intent.compile(
            self.node, namespaces, self._pod_specs(inventory), IdentityTable.from_dict(inventory.identities),
            EndpointTable.from_dict(inventory.endpoint_ids), memo=self._memo)
        self._memo = compiled.memo
        with self.lock, self.writer():
            if self.busy():  # an apply started meanwhile: it writes the node, not us
                return None
            # Between two syncs of one intent the agent is the node's only writer, so its last
            # target is the live state (observing 10,000 ipcache entries per pod would cost more
            # than the compile); a new intent means an apply wrote the node: observe it.
            same = self._done is not None and self._done[0] == stamp and self._last is not None
            current = self._last if same else self.driver.observe(self.node)
            assert current is not None
            changed = current != target
            if changed:
                self.driver.reconcile(self.node, current, target)
            self._last, self._done = target, key
        seconds = time.monotonic() - started
        atomic_write(self.directory / SYNC_FILE, json.dumps(
            {"revision": inventory.revision, "plan_id": intent.plan_id, "synced_at": time.time(),
             "endpoints": len(target.endpoints)}).encode())
        if changed:
            log.info("node %s: endpoints in step with inventory revision %d (%d endpoints, %.3f s)",
                     self.node, inventory.revision, len(target.endpoints), seconds)
        return SyncResult(inventory.revision, changed, len(target.endpoints), seconds)

    def run(self, stop: threading.Event) -> None:
        """Sync until `stop`; an error is logged and retried on the next change, never fatal."""
        while not stop.is_set():
            try:
                self.sync()
            except Exception as err:
                log.error("node %s: endpoint sync failed: %s", self.node, err)
                self._done, self._last = None, None
                stop.wait(1.0)
            stop.wait(self.interval_s)

    def start(self, stop: threading.Event) -> threading.Thread:
        thread = threading.Thread(target=self.run, args=(stop,), name=f"endpoints-{self.node}", daemon=True)
        thread.start()
        return thread
