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
latency; the DNS proxy's records (meshctl.flows.dnslog) in a third, `dns` (query, type, rcode,
addresses, TTL, latency); queries read all three and merge them by time.
"""

from __future__ import annotations

import sqlite3
import time
from collections.abc import Iterable, Iterator, Sequence
from dataclasses import replace
from pathlib import Path

from meshctl.errors import MeshctlError
from meshctl.flows.dims import ATTRIBUTIONS_SCHEMA, PEER_NAMES_COLUMN, PEERS_SCHEMA, Dimensions
from meshctl.flows.dnslog import DNS_FIELDS, DNS_TEXT_FIELDS, DnsRow
from meshctl.flows.enrich import STORED_FIELDS, WIDE_FIELDS, Row, flow_of
from meshctl.flows.filters import DNS, FLOWS, HTTP, L7_TABLES, FlowFilter, register_sql
from meshctl.flows.flow import Flow
from meshctl.flows.httplog import HTTP_FIELDS, HttpRow

# 3: the `http` table; 4: the `dns` table and peers' DNS names (an older store gets them when its
# agent opens it)
SCHEMA_VERSION = "4"


def _l7_schema(table: str, fields: tuple[str, ...], text: tuple[str, ...]) -> str:
    return (f"CREATE TABLE IF NOT EXISTS {table} (time_ns INTEGER PRIMARY KEY, "
            + ", ".join(f"{c} {'TEXT' if c in text else 'INTEGER'} NOT NULL" for c in fields[1:]) + ")")


SCHEMA = (
    _l7_schema(HTTP, HTTP_FIELDS, ("method", "url", "host", "version")),
    _l7_schema(DNS, DNS_FIELDS, DNS_TEXT_FIELDS),
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
INSERT_DNS = f"INSERT INTO dns VALUES ({', '.join('?' * len(DNS_FIELDS))})"
TABLE_COLUMNS = {FLOWS: COLUMNS, HTTP: ", ".join(f"f.{c}" for c in HTTP_FIELDS),
                 DNS: ", ".join(f"f.{c}" for c in DNS_FIELDS)}
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
        self._peers: dict[int, tuple[str, int, str, str, str, str]] = {}
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
                if "names" not in self._columns("peers"):
                    self.db.execute(PEER_NAMES_COLUMN)
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
    def insert(self, rows: Sequence[Row], http: Sequence[HttpRow] = (), dns: Sequence[DnsRow] = ()) -> None:
        """One transaction per batch (new dimension rows included): one fsync-free commit."""
        if not rows and not http and not dns:
            return
        try:
            with self.db:
                self.dims.flush(self.db)
                self.db.executemany(INSERT, rows)
                self.db.executemany(INSERT_HTTP, http)
                self.db.executemany(INSERT_DNS, dns)
        except sqlite3.Error as err:
            self.dims.reload()  # the rollback took this batch's new ids with it
            raise StoreError(f"flow store {self.path}: {err}") from err
        if rows:
            self.last_ns = int(rows[-1][0])  # type: ignore[call-overload]

    def prune(self, max_age_s: float | None, max_rows: int | None, now: float | None = None) -> int:
        """Enforce retention (two range deletes on the time key); returns rows deleted."""
        deleted = 0
        with self.db:
            for table in (FLOWS, *L7_TABLES):
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
        if table != FLOWS and not self._columns(table):  # a store its agent has not opened since
            return 0
        return int(self.db.execute(f"SELECT coalesce(max(time_ns), 0) FROM {table}").fetchone()[0])

    max_rowid = max_time  # the UI's follow mark over the datapath's flows: the time key is the rowid

    def marks(self) -> dict[str, int]:
        """Where `follow` goes on from: the newest key of each table."""
        return {table: self.max_time(table) for table in (FLOWS, *L7_TABLES)}

    def _names(self) -> None:
        """Refresh the cached dimension tables (new peers appear while the agent runs)."""
        names = "names" if "names" in self._columns("peers") else "''"  # an agent not yet restarted
        self._peers = {int(r[0]): (str(r[1]), int(r[2]), str(r[3]), str(r[4]), str(r[5]), str(r[6])) for r in
                       self.db.execute(f"SELECT id, ip, identity, pod, ns, labels, {names} FROM peers")}
        self._attrs = {int(r[0]): (str(r[1]), str(r[2])) for r in
                       self.db.execute("SELECT id, policy, isolated_by FROM attributions")}

    def _wide(self, r: Row) -> Row:
        (t, verdict, reason, direction, proto, sport, dport, flags, length, cookie, s, d, a) = r
        if s not in self._peers or d not in self._peers or a not in self._attrs:
            self._names()
        peers, attrs = self._peers, self._attrs
        sip, sid, spod, sns, slab, _ = peers.get(s, ("", 0, "", "", "", ""))  # type: ignore[call-overload]
        dip, did, dpod, dns, dlab, _ = peers.get(d, ("", 0, "", "", "", ""))  # type: ignore[call-overload]
        policy, isolated = attrs.get(a, ("", ""))  # type: ignore[call-overload]
        return (t, verdict, reason, direction, proto, sip, dip, sport, dport, sid, did, flags, length, cookie,
                spod, dpod, sns, dns, slab, dlab, policy, isolated)

    def query(self, flt: FlowFilter | None = None, last: int | None = None,
              after_rowid: int | None = None, first: int | None = None,
              table: str = FLOWS) -> list[tuple[int, Flow]]:
        """(time key, flow) in time order; `last` keeps the newest N, `first` the oldest N;
        `after_rowid` for --follow. `table`: the datapath's flows, or the proxy's HTTP records."""
        where, params = (flt or FlowFilter()).where(table)
        if where == "0" or (table != FLOWS and not self._columns(table)):
            return []
        if after_rowid is not None:
            where += " AND f.time_ns > ?"
            params = [*params, after_rowid]
        select = f"SELECT {TABLE_COLUMNS[table]} FROM {table} f WHERE {where} ORDER BY f.time_ns"
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
        make = {FLOWS: self._flow, HTTP: self._http_flow, DNS: self._dns_flow}[table]
        return [(int(r[0]), make(r)) for r in rows]

    def _flow(self, r: Row) -> Flow:
        flow = flow_of(self._wide(r), self.node)
        src_names, dst_names = self._peers[r[10]][5], self._peers[r[11]][5]  # type: ignore[index]
        if src_names or dst_names:
            return replace(flow, src_names=tuple(src_names.split(",")) if src_names else (),
                           dst_names=tuple(dst_names.split(",")) if dst_names else ())
        return flow

    def _l4(self, r: Row) -> Flow:
        """An L7 record's connection part (its first ten columns) as a Flow."""
        t, verdict, reason, direction, proto, sport, dport, s, d, a = r[:10]
        return flow_of(self._wide((t, verdict, reason, direction, proto, sport, dport, 0, 0, 0, s, d, a)),
                       self.node)

    def _http_flow(self, r: HttpRow) -> Flow:
        l7, method, url, host, version, status, latency = r[10:]
        return replace(self._l4(r), l7=int(l7), http_method=str(method),  # type: ignore[call-overload]
                       http_url=str(url), http_host=str(host), http_protocol=str(version),
                       http_status=int(status), latency_ns=int(latency))  # type: ignore[call-overload]

    def _dns_flow(self, r: DnsRow) -> Flow:
        l7, query, qtypes, rcode, ips, ttl, latency = r[10:]
        return replace(self._l4(r), l7=int(l7), dns_query=str(query),  # type: ignore[call-overload]
                       dns_qtypes=str(qtypes), dns_rcode=str(rcode),
                       dns_ips=tuple(str(ips).split(",")) if ips else (), dns_ttl=int(ttl),  # type: ignore[call-overload]
                       latency_ns=int(latency))  # type: ignore[call-overload]

    def query_both(self, flt: FlowFilter | None = None, last: int | None = None,
                   first: int | None = None) -> list[Flow]:
        """The datapath's flows and the proxies' HTTP and DNS records, merged by time."""
        tables = (FLOWS, *L7_TABLES)
        flows = [f for table in tables for _, f in self.query(flt, last, first=first, table=table)]
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
    marks = {s.path: (s.marks() if start_at_end else dict.fromkeys((FLOWS, *L7_TABLES), 0)) for s in stores}
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
