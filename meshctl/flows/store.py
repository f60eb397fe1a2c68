"""The flow store: one SQLite file per node (state/flows/<node>.db), WAL, batched inserts.

One writer (the node's agent) and any number of readers (`observe`, `connectivity test`):
WAL lets readers run during writes. Rows are appended in time order, so rowid order is time
order and retention by size is one range delete on rowid.
"""

from __future__ import annotations

import sqlite3
import time
from collections.abc import Iterable, Iterator, Sequence
from pathlib import Path

from meshctl.errors import MeshctlError
from meshctl.flows.enrich import ROW_FIELDS, Row, flow_of
from meshctl.flows.filters import FlowFilter
from meshctl.flows.flow import Flow

_TYPES = {
    "src_ip": "TEXT", "dst_ip": "TEXT", "src_pod": "TEXT", "dst_pod": "TEXT", "src_ns": "TEXT",
    "dst_ns": "TEXT", "src_labels": "TEXT", "dst_labels": "TEXT", "policy": "TEXT", "isolated_by": "TEXT",
}
SCHEMA = (
    "CREATE TABLE IF NOT EXISTS flows ("
    + ", ".join(f"{c} {_TYPES.get(c, 'INTEGER')} NOT NULL" for c in ROW_FIELDS)
    + ")",
    "CREATE INDEX IF NOT EXISTS flows_time ON flows(time_ns)",
    "CREATE INDEX IF NOT EXISTS flows_verdict ON flows(verdict, time_ns)",
    "CREATE INDEX IF NOT EXISTS flows_src_pod ON flows(src_pod, time_ns)",
    "CREATE INDEX IF NOT EXISTS flows_dst_pod ON flows(dst_pod, time_ns)",
    "CREATE TABLE IF NOT EXISTS meta (key TEXT PRIMARY KEY, value TEXT NOT NULL)",
)
INSERT = f"INSERT INTO flows ({', '.join(ROW_FIELDS)}) VALUES ({', '.join('?' * len(ROW_FIELDS))})"
COLUMNS = ", ".join(ROW_FIELDS)


class StoreError(MeshctlError):
    """The flow store cannot be opened or read."""


def store_dir(state_dir: Path) -> Path:
    return Path(state_dir) / "flows"


def store_path(state_dir: Path, node: str) -> Path:
    return store_dir(state_dir) / f"{node}.db"


class FlowStore:
    """One node's flows. Open read-only for queries, read-write in the agent."""

    def __init__(self, path: Path, node: str | None = None, readonly: bool = False) -> None:
        self.path = Path(path)
        self.node = node or self.path.stem
        try:
            if readonly:
                if not self.path.exists():
                    raise StoreError(
                        f"no flow store at {self.path}: is `meshctl agent --node {self.node}` running?")
                self.db = sqlite3.connect(f"file:{self.path}?mode=ro", uri=True, timeout=5.0,
                                          check_same_thread=False)
                if not self._has_table():  # the agent is creating it right now: empty for now
                    self.db.close()
                    self.db = sqlite3.connect(":memory:", check_same_thread=False)
                    for stmt in SCHEMA:
                        self.db.execute(stmt)
            else:
                self.path.parent.mkdir(parents=True, exist_ok=True)
                self.db = sqlite3.connect(self.path, timeout=5.0, check_same_thread=False)
                self.db.execute("PRAGMA journal_mode=WAL")
                self.db.execute("PRAGMA synchronous=NORMAL")
                for stmt in SCHEMA:
                    self.db.execute(stmt)
                self.db.commit()
        except sqlite3.Error as err:
            raise StoreError(f"flow store {self.path}: {err}") from err

    def _has_table(self) -> bool:
        sql = "SELECT 1 FROM sqlite_master WHERE type = 'table' AND name = 'flows'"
        return self.db.execute(sql).fetchone() is not None

    def close(self) -> None:
        self.db.close()

    def __enter__(self) -> FlowStore:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    # -- writing (the agent)
    def insert(self, rows: Sequence[Row]) -> None:
        """One transaction per batch: thousands of rows cost one fsync-free commit (WAL, NORMAL)."""
        if rows:
            with self.db:
                self.db.executemany(INSERT, rows)

    def prune(self, max_age_s: float | None, max_rows: int | None, now: float | None = None) -> int:
        """Enforce retention; returns rows deleted."""
        deleted = 0
        with self.db:
            if max_age_s is not None:
                cutoff = int(((time.time() if now is None else now) - max_age_s) * 1e9)
                deleted += self.db.execute("DELETE FROM flows WHERE time_ns < ?", (cutoff,)).rowcount
            if max_rows is not None:
                top = self.db.execute("SELECT max(rowid) FROM flows").fetchone()[0]
                if top is not None:
                    cur = self.db.execute("DELETE FROM flows WHERE rowid <= ?", (top - max_rows,))
                    deleted += cur.rowcount
        return deleted

    def set_meta(self, key: str, value: str) -> None:
        with self.db:
            self.db.execute("INSERT OR REPLACE INTO meta VALUES (?, ?)", (key, value))

    # -- reading
    def meta(self, key: str) -> str | None:
        row = self.db.execute("SELECT value FROM meta WHERE key = ?", (key,)).fetchone()
        return None if row is None else str(row[0])

    def count(self) -> int:
        return int(self.db.execute("SELECT count(*) FROM flows").fetchone()[0])

    def max_rowid(self) -> int:
        return int(self.db.execute("SELECT coalesce(max(rowid), 0) FROM flows").fetchone()[0])

    def query(self, flt: FlowFilter | None = None, last: int | None = None,
              after_rowid: int | None = None) -> list[tuple[int, Flow]]:
        """(rowid, flow) in time order; `last` keeps the newest N; `after_rowid` for --follow."""
        where, params = (flt or FlowFilter()).where()
        if after_rowid is not None:
            where += " AND rowid > ?"
            params = [*params, after_rowid]
        try:
            if last is not None:
                sql = (f"SELECT rowid, {COLUMNS} FROM flows WHERE {where} "
                       "ORDER BY time_ns DESC, rowid DESC LIMIT ?")
                rows = self.db.execute(sql, [*params, last]).fetchall()
                rows.reverse()
            else:
                sql = f"SELECT rowid, {COLUMNS} FROM flows WHERE {where} ORDER BY time_ns, rowid"
                rows = self.db.execute(sql, params).fetchall()
        except sqlite3.Error as err:
            raise StoreError(f"flow store {self.path}: {err}") from err
        return [(r[0], flow_of(r[1:], self.node)) for r in rows]


def open_stores(state_dir: Path, nodes: Iterable[str] = ()) -> list[FlowStore]:
    """Read-only stores of the named nodes (all stores present when none named)."""
    d = store_dir(state_dir)
    names = list(nodes) or sorted(p.stem for p in d.glob("*.db"))
    if not names:
        raise StoreError(f"no flow stores under {d}: start `meshctl agent` (or `meshctl lab up`)")
    return [FlowStore(store_path(state_dir, n), n, readonly=True) for n in names]


def query_all(stores: Sequence[FlowStore], flt: FlowFilter | None = None,
              last: int | None = None) -> list[Flow]:
    """Merge nodes by time; `last` applies to the merged result."""
    flows = [f for s in stores for _, f in s.query(flt, last)]
    flows.sort(key=lambda f: f.time_ns)
    return flows[-last:] if last is not None and last >= 0 else flows


def follow(stores: Sequence[FlowStore], flt: FlowFilter, interval: float = 0.2,
           start_at_end: bool = True) -> Iterator[Flow]:
    """Yield new flows as the agents store them (polls rowids; stop by closing the generator)."""
    marks = {s.path: (s.max_rowid() if start_at_end else 0) for s in stores}
    while True:
        batch: list[Flow] = []
        for s in stores:
            for rowid, flow in s.query(flt, after_rowid=marks[s.path]):
                marks[s.path] = rowid
                batch.append(flow)
        batch.sort(key=lambda f: f.time_ns)
        yield from batch
        if not batch:
            time.sleep(interval)
