"""The apply journal (state/journal.jsonl): intent written down before a node is touched.

Append-only JSON lines, each fsync'd: {plan_id, node, phase: begin|done|reverted, before, after}
(canonical NodeStates). A crash leaves nodes whose last record is `begin`: open_entries() lists
them with both states so `meshctl recover` can move each to one side. A torn last line (crash
mid-write) is dropped: its record never became durable, so the step it announced either had
not started (begin) or is re-checked by recover (done/reverted leave the node open). The file is
cleared when an apply ends cleanly.
"""

from __future__ import annotations

import json
import logging
import os
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Literal

from meshctl.errors import StateError
from meshctl.nodestate import NodeState
from meshctl.state.atomic import fsync_dir

log = logging.getLogger(__name__)

JOURNAL_FILE = "journal.jsonl"
Phase = Literal["begin", "done", "reverted"]
PHASES = ("begin", "done", "reverted")


@dataclass(frozen=True)
class JournalRecord:
    plan_id: str
    node: str
    phase: Phase
    before: NodeState | None = None
    after: NodeState | None = None

    def to_text(self) -> str:
        """json.dumps(self.to_json(), sort_keys=True, separators=(",", ":")), with each state's
        text joined from its canonical parts (NodeState.canonical_json)."""
        def state(s: NodeState | None) -> str:
            return "null" if s is None else s.canonical_json()

        return (f'{{"after":{state(self.after)},"before":{state(self.before)},"node":{json.dumps(self.node)},'
                f'"phase":{json.dumps(self.phase)},"plan_id":{json.dumps(self.plan_id)}}}')

    def to_json(self) -> dict[str, Any]:
        return {
            "plan_id": self.plan_id,
            "node": self.node,
            "phase": self.phase,
            "before": self.before.canonical() if self.before else None,
            "after": self.after.canonical() if self.after else None,
        }

    @classmethod
    def from_json(cls, d: dict[str, Any]) -> JournalRecord:
        if d["phase"] not in PHASES:
            raise ValueError(f"unknown phase {d['phase']!r}")
        return cls(
            plan_id=d["plan_id"],
            node=d["node"],
            phase=d["phase"],
            before=NodeState.from_canonical(d["before"]) if d.get("before") else None,
            after=NodeState.from_canonical(d["after"]) if d.get("after") else None,
        )


class Journal:
    """The journal of one state directory; `plan_id` stamps the records this process appends."""

    def __init__(self, state_dir: Path, plan_id: str = "") -> None:
        self.path = state_dir / JOURNAL_FILE
        self.plan_id = plan_id

    # The apply engine's Journal protocol.
    def begin(self, node: str, before: NodeState, after: NodeState) -> None:
        self.append(JournalRecord(self.plan_id, node, "begin", before, after))

    def done(self, node: str) -> None:
        self.append(JournalRecord(self.plan_id, node, "done"))

    def reverted(self, node: str) -> None:
        self.append(JournalRecord(self.plan_id, node, "reverted"))

    def append(self, record: JournalRecord) -> None:
        """Durable when this returns (fsync of the file, and of the directory on creation)."""
        self.path.parent.mkdir(parents=True, exist_ok=True)
        created = not self.path.exists()
        self._drop_torn_tail()
        line = record.to_text() + "\n"
        fd = os.open(self.path, os.O_WRONLY | os.O_APPEND | os.O_CREAT, 0o600)
        try:
            os.write(fd, line.encode())
            os.fsync(fd)
        finally:
            os.close(fd)
        if created:
            fsync_dir(self.path.parent)

    def _drop_torn_tail(self) -> None:
        """Cut a partial last line so the next record starts on a line of its own (only the last
        byte is read unless it is torn: a journal of 20 nodes holds 40 whole states)."""
        try:
            with open(self.path, "rb") as f:
                size = f.seek(0, os.SEEK_END)
                if size == 0:
                    return
                f.seek(size - 1)
                if f.read(1) == b"\n":
                    return
        except FileNotFoundError:
            return
        data = self.path.read_bytes()
        if data and not data.endswith(b"\n"):
            keep = data.rfind(b"\n") + 1
            log.warning("journal %s: dropping a torn last record (%d bytes)", self.path, len(data) - keep)
            os.truncate(self.path, keep)

    def records(self) -> list[JournalRecord]:
        try:
            data = self.path.read_bytes()
        except FileNotFoundError:
            return []
        except OSError as err:
            raise StateError(f"{self.path}: cannot read the journal: {err.strerror}") from err
        lines = data.split(b"\n")
        out: list[JournalRecord] = []
        for i, raw in enumerate(lines, 1):
            if not raw.strip():
                continue
            try:
                out.append(JournalRecord.from_json(json.loads(raw)))
            except (ValueError, KeyError, TypeError) as err:
                if i == len(lines) and not data.endswith(b"\n"):
                    log.warning("journal %s: ignoring a torn last record", self.path)
                    continue
                raise StateError(f"{self.path}:{i}: corrupt journal record: {err}") from err
        return out

    def open_entries(self) -> dict[str, JournalRecord]:
        """node -> its `begin` record, for nodes begun but neither done nor reverted."""
        open_: dict[str, JournalRecord] = {}
        for rec in self.records():
            if rec.phase == "begin":
                open_[rec.node] = rec
            else:
                open_.pop(rec.node, None)
        return open_

    def clear(self) -> None:
        """End of a clean apply: nothing left to recover."""
        try:
            self.path.unlink()
        except FileNotFoundError:
            return
        fsync_dir(self.path.parent)


class MemoryJournal:
    """The engine's journal kept in this process only: for nodes that journal themselves.

    With the node agents, each node keeps its own journal and apply session (the agent reverts
    a node whose session goes silent), so a CLI killed mid-apply must not leave a local journal
    that makes plan and drift ask for `recover` on this machine."""

    def __init__(self, plan_id: str = "") -> None:
        self.plan_id = plan_id
        self._records: list[JournalRecord] = []

    def begin(self, node: str, before: NodeState, after: NodeState) -> None:
        self._records.append(JournalRecord(self.plan_id, node, "begin", before, after))

    def done(self, node: str) -> None:
        self._records.append(JournalRecord(self.plan_id, node, "done"))

    def reverted(self, node: str) -> None:
        self._records.append(JournalRecord(self.plan_id, node, "reverted"))

    def records(self) -> list[JournalRecord]:
        return list(self._records)

    def clear(self) -> None:
        self._records.clear()
