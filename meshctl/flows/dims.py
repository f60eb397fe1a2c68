"""Dimension tables of the flow store: repeated strings interned once as small integer ids.

A flow row would otherwise repeat the same pod names, label sets and policy names a million
times; SQLite pays per bound value and per byte. The agent interns each distinct peer
(ip, identity, pod, labels) and attribution (policy rule, isolating policies) once, and a
flow row carries three integers instead of ten strings. Readers join them back.

One writer per store (the node's agent), so ids are handed out from memory: max id + 1. New
rows wait in `pending` until the store writes them in the same transaction as the first flows
that use them (the agent interns in its reader thread and inserts in its writer thread).
"""

from __future__ import annotations

import sqlite3
import threading

PEERS_SCHEMA = (
    "CREATE TABLE IF NOT EXISTS peers (id INTEGER PRIMARY KEY, ip TEXT NOT NULL, "
    "identity INTEGER NOT NULL, pod TEXT NOT NULL, ns TEXT NOT NULL, labels TEXT NOT NULL, "
    "names TEXT NOT NULL DEFAULT '')"
)
# The DNS names of an address (meshctl.flows.dnslog), added to stores made before they existed.
PEER_NAMES_COLUMN = "ALTER TABLE peers ADD COLUMN names TEXT NOT NULL DEFAULT ''"
ATTRIBUTIONS_SCHEMA = (
    "CREATE TABLE IF NOT EXISTS attributions (id INTEGER PRIMARY KEY, policy TEXT NOT NULL, "
    "isolated_by TEXT NOT NULL)"
)

PeerKey = tuple[str, int, str, str, str]  # ip, identity, pod ("ns/name" or ""), labels, DNS names
AttrKey = tuple[str, str]  # policy rule, isolating policies (comma-separated)


class Dimensions:
    """content -> id for peers and attributions; rows go to `db` (same transaction as the flows)."""

    def __init__(self, db: sqlite3.Connection | None = None) -> None:
        self.db = db
        self._lock = threading.Lock()
        self._pending: list[tuple[str, tuple[object, ...]]] = []
        self.peers: dict[PeerKey, int] = {}
        self.attrs: dict[AttrKey, int] = {}
        self.attr_names: dict[int, AttrKey] = {}  # read by the metrics collector
        if db is not None:
            self.reload()

    def reload(self) -> None:
        """Read the tables back (at open, and after a failed transaction rolled new ids back)."""
        assert self.db is not None
        rows = self.db.execute("SELECT id, ip, identity, pod, labels, names FROM peers")
        self.peers = {(str(ip), int(i), str(pod), str(lab), str(names)): int(pid)
                      for pid, ip, i, pod, lab, names in rows}
        rows = self.db.execute("SELECT id, policy, isolated_by FROM attributions").fetchall()
        self.attrs = {(str(p), str(iso)): int(aid) for aid, p, iso in rows}
        self.attr_names.clear()  # in place: the metrics collector holds this dict
        self.attr_names.update({aid: key for key, aid in self.attrs.items()})

    def peer(self, ip: str, identity: int, pod: str, labels: str, names: str = "") -> int:
        """`names`: the DNS names the address was answered for, comma-separated."""
        key = (ip, identity, pod, labels, names)
        pid = self.peers.get(key)
        if pid is None:
            pid = len(self.peers) + 1
            row = (pid, ip, identity, pod, pod.partition("/")[0] if pod else "", labels, names)
            with self._lock:
                self._pending.append(("INSERT INTO peers (id, ip, identity, pod, ns, labels, names) "
                                      "VALUES (?, ?, ?, ?, ?, ?, ?)", row))
            self.peers[key] = pid
        return pid

    def attribution(self, policy: str, isolated_by: str) -> int:
        key = (policy, isolated_by)
        aid = self.attrs.get(key)
        if aid is None:
            aid = len(self.attrs) + 1
            row = (aid, policy, isolated_by)
            with self._lock:
                self._pending.append(("INSERT INTO attributions VALUES (?, ?, ?)", row))
            self.attrs[key] = aid
            self.attr_names[aid] = key
        return aid

    def flush(self, db: sqlite3.Connection) -> None:
        """Write the rows interned since the last flush (inside the caller's transaction)."""
        with self._lock:
            pending, self._pending = self._pending, []
        for sql, row in pending:
            db.execute(sql, row)
