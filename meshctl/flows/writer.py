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

from meshctl.flows.enrich import Row
from meshctl.flows.httplog import HttpRow
from meshctl.flows.store import FlowStore

log = logging.getLogger(__name__)
MAX_QUEUED = 256  # batches; when SQLite falls this far behind, the reader waits (the ring buffers)
MAX_TRANSACTION = 100_000  # rows per commit: steady progress and bounded memory under a backlog


class StoreWriter:
    """`put(rows)` from the reader; `close()` writes what is queued and stops."""

    def __init__(self, store: FlowStore, on_stored: Callable[[int], None],
                 max_age_s: float | None, max_rows: int | None, prune_every_s: float) -> None:
        self.store = store
        self._on_stored = on_stored
        self._retention = (max_age_s, max_rows)
        self._prune_every_s = prune_every_s
        self._queue: queue.Queue[tuple[list[Row], list[HttpRow]] | None] = queue.Queue(MAX_QUEUED)
        self.error: BaseException | None = None
        self._thread = threading.Thread(target=self._run, name="flow-store-writer", daemon=True)
        self._thread.start()

    def put(self, rows: list[Row], http: list[HttpRow] | None = None) -> None:
        """Datapath flow rows and the proxy's HTTP rows (meshctl.flows.httplog)."""
        if self.error is not None:
            raise self.error
        while rows or http:
            try:
                self._queue.put((rows, http or []), timeout=1.0)
                return
            except queue.Full:
                if self.error is not None:
                    raise self.error from None

    def _take(self, first: tuple[list[Row], list[HttpRow]]) -> tuple[list[Row], list[HttpRow], bool]:
        """The first batch plus batches already queued behind it, up to MAX_TRANSACTION rows."""
        rows, http = list(first[0]), list(first[1])
        while len(rows) + len(http) < MAX_TRANSACTION:
            try:
                more = self._queue.get_nowait()
            except queue.Empty:
                return rows, http, False
            if more is None:
                return rows, http, True
            rows.extend(more[0])
            http.extend(more[1])
        return rows, http, False

    def _run(self) -> None:
        next_prune = time.monotonic()
        try:
            while True:
                try:
                    first = self._queue.get(timeout=1.0)
                except queue.Empty:
                    first = ([], [])
                if first is None:
                    return
                rows, http, stop = self._take(first)
                if rows or http:
                    self.store.insert(rows, http)
                    self._on_stored(len(rows) + len(http))
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
