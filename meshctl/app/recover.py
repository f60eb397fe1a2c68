"""`meshctl recover`: finish an apply that was killed, from its journal.

Every node whose last record is `begin` may be anywhere between its before- and after-state
(the kill can land inside a reconcile); it is reconciled back to the journalled before-state
and checked to match it exactly. Nodes whose last record is `done` are fully at their
after-state and verified: they stay, and their intent is recorded in the state if the
interrupted apply did not get to commit it. Then the journal is removed.

The lock of the killed apply is left behind with a dead pid. Recover is the human's explicit
"clean up after the crash", so it takes over a lock whose holder is gone (same host, pid dead)
and says so; a lock held by a live process is respected.
"""

from __future__ import annotations

import contextlib
import socket
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from typing import TYPE_CHECKING

from meshctl.errors import RollbackError
from meshctl.nodestate import NodeState

if TYPE_CHECKING:
    from meshctl.app.workspace import Workspace
    from meshctl.state import JournalRecord


@dataclass
class RecoverResult:
    reverted: list[str] = field(default_factory=list)  # back at their before-state
    kept: list[str] = field(default_factory=list)  # at their after-state (done)
    committed: bool = False  # the state was updated with kept nodes
    broke_lock: str = ""
    nothing: bool = False

    def summary(self) -> str:
        if self.nothing:
            return "Nothing to recover: no interrupted apply."
        lines = []
        if self.broke_lock:
            lines.append(f"Took over the lock of the interrupted apply ({self.broke_lock}).")
        if self.reverted:
            lines.append(f"Reverted to the before-state: {', '.join(self.reverted)}.")
        if self.kept:
            state = " (recorded in the state)" if self.committed else ""
            lines.append(f"Kept at the after-state (applied and verified): {', '.join(self.kept)}{state}.")
        lines.append("Recovered: every node is entirely before or entirely after the interrupted apply.")
        return "\n".join(lines)


def last_records(records: list[JournalRecord]) -> tuple[dict[str, JournalRecord], dict[str, str]]:
    """node -> its begin record, node -> the phase of its last record."""
    begins: dict[str, JournalRecord] = {}
    last: dict[str, str] = {}
    for rec in records:
        if rec.phase == "begin":
            begins[rec.node] = rec
        last[rec.node] = rec.phase
    return begins, last


@contextlib.contextmanager
def _recover_lock(ws: Workspace, result: RecoverResult) -> Iterator[None]:
    from meshctl.state import StateLock, read_lock, unlock

    held = read_lock(ws.state_dir)
    if held is not None and held.owner.rpartition("@")[2] == socket.gethostname() and not held.pid_alive():
        unlock(ws.state_dir, held.id)
        result.broke_lock = held.describe()
    with StateLock(ws.state_dir, "recover"):
        yield


def recover(ws: Workspace, on_event: Callable[[str], None] | None = None) -> RecoverResult:
    from meshctl.state import Journal, load_state, save_state

    say = on_event or (lambda _m: None)
    result = RecoverResult()
    with _recover_lock(ws, result):
        journal = Journal(ws.state_dir)
        records = journal.records()
        if not records:
            result.nothing = True
            return result
        begins, last = last_records(records)
        backend = ws.backend  # the lab's kernel, or the node's agent (revert endpoint)
        failures = []
        for node, phase in last.items():
            rec = begins.get(node)
            if rec is None or rec.before is None:
                continue
            if phase == "begin":
                say(f"node {node}: reverting to its before-state")
                try:
                    backend.restore(node, rec.before)
                except Exception as err:
                    failures.append(f"node {node}: {err}")
                    continue
                Journal(ws.state_dir, rec.plan_id).reverted(node)
                result.reverted.append(node)
            elif phase == "done" and rec.after is not None:
                result.kept.append(node)
        if failures:
            raise RollbackError("recover could not restore: " + "; ".join(failures) + " (run recover again)")
        if result.kept:
            state = load_state(ws.state_dir)
            plan_id = begins[result.kept[0]].plan_id
            todo: dict[str, NodeState] = {}
            for n in result.kept:
                after = begins[n].after
                known = state.nodes.get(n)
                if after is not None and (known is None or known.fingerprint != after.fingerprint()):
                    todo[n] = after
            if todo:
                save_state(ws.state_dir, state.record_apply(plan_id, todo))
                result.committed = True
        journal.clear()
    return result
