"""The agent's store writer: a thread that owns every write to the flow store.

The reader (ring -> rows) must never wait for SQLite: a commit, a WAL checkpoint or a
retention delete can take tens of ms, and a ring buffer that is not drained meanwhile drops
events. So the reader queues row batches and this thread inserts whatever has accumulated in
one transaction. sqlite3 releases the GIL while SQLite works, so decoding the next batch and
writing this one overlap on a second core.
"""

from __future__ import annotations

import logging
import queue
import threading
import time
from collections.abc import Callable

from meshctl.flows.dnslog import DnsRow
from meshctl.flows.enrich import Row
from meshctl.flows.httplog import HttpRow
from meshctl.flows.store import FlowStore

log = logging.getLogger(__name__)
MAX_QUEUED = 256  # batches; when SQLite falls this far behind, the reader waits (the ring buffers)
MAX_TRANSACTION = 100_000  # rows per commit: steady progress and bounded memory under a backlog
Batch = tuple[list[Row], list[HttpRow], list[DnsRow]]


class StoreWriter:
    """`put(rows)` from the reader; `close()` writes what is queued and stops."""

    def __init__(self, store: FlowStore, on_stored: Callable[[int], None],
                 max_age_s: float | None, max_rows: int | None, prune_every_s: float) -> None:
        self.store = store
        self._on_stored = on_stored
        self._retention = (max_age_s, max_rows)
        self._prune_every_s = prune_every_s
        self._queue: queue.Queue[Batch | None] = queue.Queue(MAX_QUEUED)
        self.error: BaseException | None = None
        self._thread = threading.Thread(target=self._run, name="flow-store-writer", daemon=True)
        self._thread.start()

    def put(self, rows: list[Row], http: list[HttpRow] | None = None,
            dns: list[DnsRow] | None = None) -> None:
        """Datapath flow rows and the proxies' HTTP and DNS rows (meshctl.flows.httplog, dnslog)."""
        if self.error is not None:
            raise self.error
        while rows or http or dns:
            try:
                self._queue.put((rows, http or [], dns or []), timeout=1.0)
                return
            except queue.Full:
                if self.error is not None:
                    raise self.error from None

    def _take(self, first: Batch) -> tuple[Batch, bool]:
        """The first batch plus batches already queued behind it, up to MAX_TRANSACTION rows."""
        batch: Batch = (list(first[0]), list(first[1]), list(first[2]))
        while sum(map(len, batch)) < MAX_TRANSACTION:
            try:
                more = self._queue.get_nowait()
            except queue.Empty:
                return batch, False
            if more is None:
                return batch, True
            for mine, theirs in zip(batch, more, strict=True):
                mine.extend(theirs)
        return batch, False

    def _run(self) -> None:
        next_prune = time.monotonic()
        try:
            while True:
                try:
                    first = self._queue.get(timeout=1.0)
                except queue.Empty:
                    first = ([], [], [])
                if first is None:
                    return
                batch, stop = self._take(first)
                if any(batch):
                    self.store.insert(*batch)
                    self._on_stored(sum(map(len, batch)))
                if time.monotonic() >= next_prune:
                    self.store.prune(*self._retention)
                    next_prune = time.monotonic() + self._prune_every_s
                if stop:
                    return
        except BaseException as exc:  # surfaced to the reader on its next put()
            log.error("flow store writer stopped: %s", exc)
            self.error = exc

    def close(self) -> None:
        """Write everything queued, then stop the thread."""
        if self._thread.is_alive():
            self._queue.put(None)
            self._thread.join()
        if self.error is not None:
            raise self.error
