"""The flow store: one SQLite file per node (state/flows/<node>.db), WAL, batched inserts.

One writer (the node's agent) and any number of readers (`observe`, `connectivity test`):
WAL lets readers run during writes. Built for 100k+ stored flows/s from one Python process:
- a flow row is 13 integers (meshctl.flows.enrich.STORED_FIELDS); pod names, labels and
  policy names are interned in small dimension tables (meshctl.flows.dims) and joined back
  when read (in Python, from a cached copy of those tables; the `flows_named` view does the
  same in SQL for ad-hoc queries);
- the flow's time is the INTEGER PRIMARY KEY: the table is clustered by time, so inserts
  append, `--last N` reads the last N rows of the B-tree, `--since/--until` are range scans
  and retention (age and size) is one range delete; no secondary index to maintain;
- executemany in one transaction per batch, WAL with synchronous=NORMAL (no fsync per commit).
The L7 proxy's HTTP records (meshctl.flows.httplog) live in a second table, `http`, keyed by time
the same way, with the same peer and attribution ids plus method, URL, host, version, status and
latency; queries read both and merge them by time.
"""

from __future__ import annotations

import sqlite3
import time
from collections.abc import Iterable, Iterator, Sequence
from dataclasses import replace
from pathlib import Path

from meshctl.errors import MeshctlError
from meshctl.flows.dims import ATTRIBUTIONS_SCHEMA, PEERS_SCHEMA, Dimensions
from meshctl.flows.enrich import STORED_FIELDS, WIDE_FIELDS, Row, flow_of
from meshctl.flows.filters import FLOWS, HTTP, FlowFilter, register_sql
from meshctl.flows.flow import Flow
from meshctl.flows.httplog import HTTP_FIELDS, HttpRow

SCHEMA_VERSION = "3"  # 3: the `http` table (an older store gets it when its agent opens it)
HTTP_SCHEMA = (
    "CREATE TABLE IF NOT EXISTS http (time_ns INTEGER PRIMARY KEY, "
    + ", ".join(f"{c} {'TEXT' if c in ('method', 'url', 'host', 'version') else 'INTEGER'} NOT NULL"
                for c in HTTP_FIELDS[1:])
    + ")"
)
SCHEMA = (
    HTTP_SCHEMA,
    "CREATE TABLE IF NOT EXISTS flows (time_ns INTEGER PRIMARY KEY, "
    + ", ".join(f"{c} INTEGER NOT NULL" for c in STORED_FIELDS[1:])
    + ")",
    PEERS_SCHEMA,
    ATTRIBUTIONS_SCHEMA,
    "CREATE TABLE IF NOT EXISTS meta (key TEXT PRIMARY KEY, value TEXT NOT NULL)",
    "CREATE VIEW IF NOT EXISTS flows_named AS SELECT f.time_ns, f.verdict, f.reason, f.direction, "
    "f.protocol, s.ip AS src_ip, d.ip AS dst_ip, f.src_port, f.dst_port, s.identity AS src_identity, "
    "d.identity AS dst_identity, f.tcp_flags, f.length, f.cookie, s.pod AS src_pod, d.pod AS dst_pod, "
    "s.ns AS src_ns, d.ns AS dst_ns, s.labels AS src_labels, d.labels AS dst_labels, a.policy, "
    "a.isolated_by FROM flows f JOIN peers s ON s.id = f.src_peer JOIN peers d ON d.id = f.dst_peer "
    "JOIN attributions a ON a.id = f.attribution",
)
INSERT = f"INSERT INTO flows ({', '.join(STORED_FIELDS)}) VALUES ({', '.join('?' * len(STORED_FIELDS))})"
COLUMNS = ", ".join(f"f.{c}" for c in STORED_FIELDS)
INSERT_HTTP = f"INSERT INTO http VALUES ({', '.join('?' * len(HTTP_FIELDS))})"
HTTP_COLUMNS = ", ".join(f"f.{c}" for c in HTTP_FIELDS)
_V1_MARK = "src_pod"  # a column only the first (wide, four-index) schema had


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
        self._peers: dict[int, tuple[str, int, str, str, str]] = {}
        self._attrs: dict[int, tuple[str, str]] = {}
        try:
            if readonly:
                self._open_readonly()
                self.dims = Dimensions()
            else:
                self.path.parent.mkdir(parents=True, exist_ok=True)
                self.db = sqlite3.connect(self.path, timeout=5.0, check_same_thread=False)
                self.db.execute("PRAGMA journal_mode=WAL")
                self.db.execute("PRAGMA synchronous=NORMAL")
                legacy = self._columns("flows")
                if legacy and _V1_MARK in legacy:
                    self.db.execute("ALTER TABLE flows RENAME TO flows_v1")
                for stmt in SCHEMA:
                    self.db.execute(stmt)
                self.db.execute("INSERT OR REPLACE INTO meta VALUES ('schema', ?)", (SCHEMA_VERSION,))
                self.db.commit()
                self.dims = Dimensions(self.db)
                if legacy and _V1_MARK in legacy:
                    self._migrate_v1()
        except sqlite3.Error as err:
            raise StoreError(f"flow store {self.path}: {err}") from err
        self.last_ns = self.max_time()

    def _open_readonly(self) -> None:
        if not self.path.exists():
            raise StoreError(f"no flow store at {self.path}: is `meshctl agent --node {self.node}` running?")
        self.db = sqlite3.connect(f"file:{self.path}?mode=ro", uri=True, timeout=5.0, check_same_thread=False)
        cols = self._columns("flows")
        if cols and _V1_MARK in cols:
            raise StoreError(f"flow store {self.path} has the old format: restart `meshctl agent --node "
                             f"{self.node}` once to convert it")
        if not cols or not self._columns("peers"):  # the agent is creating it right now: empty for now
            self.db.close()
            self.db = sqlite3.connect(":memory:", check_same_thread=False)
            for stmt in SCHEMA:
                self.db.execute(stmt)

    def _columns(self, table: str) -> set[str]:
        return {str(r[1]) for r in self.db.execute(f"PRAGMA table_info({table})")}

    def _migrate_v1(self) -> None:
        """Copy the rows of the first schema (strings in every row) into the interned one."""
        cur = self.db.execute(f"SELECT {', '.join(WIDE_FIELDS)} FROM flows_v1 ORDER BY time_ns, rowid")
        last = self.max_time()
        while batch := cur.fetchmany(50_000):
            rows = []
            for (t, verdict, reason, direction, proto, sip, dip, sport, dport, sid, did, flags, length,
                 cookie, spod, dpod, _sns, _dns, slab, dlab, policy, isolated) in batch:
                t = max(int(t), last + 1)
                last = t
                rows.append((t, verdict, reason, direction, proto, sport, dport, flags, length, cookie,
                             self.dims.peer(sip, sid, spod, slab), self.dims.peer(dip, did, dpod, dlab),
                             self.dims.attribution(policy, isolated)))
            self.dims.flush(self.db)
            self.db.executemany(INSERT, rows)
        self.db.execute("DROP TABLE flows_v1")
        self.db.commit()

    def close(self) -> None:
        self.db.close()

    def __enter__(self) -> FlowStore:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    # -- writing (the agent)
    def insert(self, rows: Sequence[Row], http: Sequence[HttpRow] = ()) -> None:
        """One transaction per batch (new dimension rows included): one fsync-free commit."""
        if not rows and not http:
            return
        try:
            with self.db:
                self.dims.flush(self.db)
                self.db.executemany(INSERT, rows)
                self.db.executemany(INSERT_HTTP, http)
        except sqlite3.Error as err:
            self.dims.reload()  # the rollback took this batch's new ids with it
            raise StoreError(f"flow store {self.path}: {err}") from err
        if rows:
            self.last_ns = int(rows[-1][0])  # type: ignore[call-overload]

    def prune(self, max_age_s: float | None, max_rows: int | None, now: float | None = None) -> int:
        """Enforce retention (two range deletes on the time key); returns rows deleted."""
        deleted = 0
        with self.db:
            for table in ("flows", "http"):
                if max_age_s is not None:
                    cutoff = int(((time.time() if now is None else now) - max_age_s) * 1e9)
                    deleted += self.db.execute(f"DELETE FROM {table} WHERE time_ns < ?", (cutoff,)).rowcount
                if max_rows is not None:
                    sql = f"SELECT time_ns FROM {table} ORDER BY time_ns DESC LIMIT 1 OFFSET ?"
                    cut = self.db.execute(sql, (max_rows,)).fetchone()
                    if cut is not None:
                        deleted += self.db.execute(f"DELETE FROM {table} WHERE time_ns <= ?",
                                                   (cut[0],)).rowcount
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

    def max_time(self, table: str = FLOWS) -> int:
        if table == HTTP and not self._columns(HTTP):  # a store its agent has not opened since 3
            return 0
        return int(self.db.execute(f"SELECT coalesce(max(time_ns), 0) FROM {table}").fetchone()[0])

    max_rowid = max_time  # the UI's follow mark over the datapath's flows: the time key is the rowid

    def marks(self) -> dict[str, int]:
        """Where `follow` goes on from: the newest key of each table."""
        return {FLOWS: self.max_time(FLOWS), HTTP: self.max_time(HTTP)}

    def _names(self) -> None:
        """Refresh the cached dimension tables (new peers appear while the agent runs)."""
        self._peers = {int(r[0]): (str(r[1]), int(r[2]), str(r[3]), str(r[4]), str(r[5])) for r in
                       self.db.execute("SELECT id, ip, identity, pod, ns, labels FROM peers")}
        self._attrs = {int(r[0]): (str(r[1]), str(r[2])) for r in
                       self.db.execute("SELECT id, policy, isolated_by FROM attributions")}

    def _wide(self, r: Row) -> Row:
        (t, verdict, reason, direction, proto, sport, dport, flags, length, cookie, s, d, a) = r
        if s not in self._peers or d not in self._peers or a not in self._attrs:
            self._names()
        peers, attrs = self._peers, self._attrs
        sip, sid, spod, sns, slab = peers.get(s, ("", 0, "", "", ""))  # type: ignore[call-overload]
        dip, did, dpod, dns, dlab = peers.get(d, ("", 0, "", "", ""))  # type: ignore[call-overload]
        policy, isolated = attrs.get(a, ("", ""))  # type: ignore[call-overload]
        return (t, verdict, reason, direction, proto, sip, dip, sport, dport, sid, did, flags, length, cookie,
                spod, dpod, sns, dns, slab, dlab, policy, isolated)

    def query(self, flt: FlowFilter | None = None, last: int | None = None,
              after_rowid: int | None = None, first: int | None = None,
              table: str = FLOWS) -> list[tuple[int, Flow]]:
        """(time key, flow) in time order; `last` keeps the newest N, `first` the oldest N;
        `after_rowid` for --follow. `table`: the datapath's flows, or the proxy's HTTP records."""
        where, params = (flt or FlowFilter()).where(table)
        if where == "0" or (table == HTTP and not self._columns(HTTP)):
            return []
        if after_rowid is not None:
            where += " AND f.time_ns > ?"
            params = [*params, after_rowid]
        columns = COLUMNS if table == FLOWS else HTTP_COLUMNS
        select = f"SELECT {columns} FROM {table} f WHERE {where} ORDER BY f.time_ns"
        try:
            register_sql(self.db)
            if first is not None:
                rows = self.db.execute(select + " LIMIT ?", [*params, first]).fetchall()
            elif last is not None:
                rows = self.db.execute(select + " DESC LIMIT ?", [*params, last]).fetchall()
                rows.reverse()
            else:
                rows = self.db.execute(select, params).fetchall()
        except sqlite3.Error as err:
            raise StoreError(f"flow store {self.path}: {err}") from err
        if table == HTTP:
            return [(int(r[0]), self._http_flow(r)) for r in rows]
        return [(int(r[0]), flow_of(self._wide(r), self.node)) for r in rows]

    def _http_flow(self, r: HttpRow) -> Flow:
        (t, verdict, reason, direction, proto, sport, dport, s, d, a, l7, method, url, host, version, status,
         latency) = r
        wide = self._wide((t, verdict, reason, direction, proto, sport, dport, 0, 0, 0, s, d, a))
        return replace(flow_of(wide, self.node), l7=int(l7), http_method=str(method),  # type: ignore[call-overload]
                       http_url=str(url), http_host=str(host), http_protocol=str(version),
                       http_status=int(status), latency_ns=int(latency))  # type: ignore[call-overload]

    def query_both(self, flt: FlowFilter | None = None, last: int | None = None,
                   first: int | None = None) -> list[Flow]:
        """The datapath's flows and the proxy's HTTP records, merged by time."""
        flows = [f for table in (FLOWS, HTTP) for _, f in self.query(flt, last, first=first, table=table)]
        flows.sort(key=lambda f: f.time_ns)
        return flows


def open_stores(state_dir: Path, nodes: Iterable[str] = ()) -> list[FlowStore]:
    """Read-only stores of the named nodes (all stores present when none named)."""
    d = store_dir(state_dir)
    names = list(nodes) or sorted(p.stem for p in d.glob("*.db"))
    if not names:
        raise StoreError(f"no flow stores under {d}: start `meshctl agent` (or `meshctl lab up`)")
    return [FlowStore(store_path(state_dir, n), n, readonly=True) for n in names]


def query_all(stores: Sequence[FlowStore], flt: FlowFilter | None = None,
              last: int | None = None, first: int | None = None) -> list[Flow]:
    """Merge nodes by time; `last` (newest N) and `first` (oldest N) apply to the merged result."""
    flows = [f for s in stores for f in s.query_both(flt, last, first=first)]
    flows.sort(key=lambda f: f.time_ns)
    if first is not None:
        return flows[:first]
    return flows[-last:] if last is not None and last >= 0 else flows


def follow(stores: Sequence[FlowStore], flt: FlowFilter, interval: float = 0.2,
           start_at_end: bool = True) -> Iterator[Flow]:
    """Yield new flows as the agents store them (polls rowids; stop by closing the generator)."""
    marks = {s.path: (s.marks() if start_at_end else {FLOWS: 0, HTTP: 0}) for s in stores}
    while True:
        batch: list[Flow] = []
        for s in stores:
            for table, mark in marks[s.path].items():
                for key, flow in s.query(flt, after_rowid=mark, table=table):
                    marks[s.path][table] = key
                    batch.append(flow)
        batch.sort(key=lambda f: f.time_ns)
        yield from batch
        if not batch:
            time.sleep(interval)
