"""The agent's store writer thread (meshctl.flows.writer): batches in, everything stored, in order."""

from __future__ import annotations

import sys
from pathlib import Path

import pytest

from meshctl.flows.store import FlowStore, StoreError
from meshctl.flows.writer import StoreWriter

sys.path.insert(0, str(Path(__file__).parent))
from test_flows import enricher, record


def test_every_queued_batch_is_stored_in_order_before_close_returns(tmp_path: Path) -> None:
    store = FlowStore(tmp_path / "n.db", "node-1")
    e = enricher(store.dims)
    stored: list[int] = []
    w = StoreWriter(store, stored.append, max_age_s=None, max_rows=None, prune_every_s=60)
    for i in range(50):
        w.put(e.rows(record("10.102.2.7", "10.102.1.5", 1000 + i, 5432, 2, 2, 300, 400, ts=i + 1) * 20))
    w.close()
    assert sum(stored) == 1000 and store.count() == 1000
    times = [t for t, _ in store.query()]
    assert times == sorted(times) and len(set(times)) == 1000
    assert [f.src_port for _, f in store.query(last=1)] == [1049]


def test_retention_runs_in_the_writer(tmp_path: Path) -> None:
    store = FlowStore(tmp_path / "n.db", "node-1")
    e = enricher(store.dims)
    w = StoreWriter(store, lambda n: None, max_age_s=None, max_rows=100, prune_every_s=0.0)
    for i in range(10):
        w.put(e.rows(record("10.102.2.7", "10.102.1.5", 1, 5432, 2, 2, 300, 400, ts=i + 1) * 50))
    w.close()
    assert store.count() == 100  # the newest 100 kept


def test_a_failed_insert_reaches_the_reader(tmp_path: Path) -> None:
    store = FlowStore(tmp_path / "n.db", "node-1")
    e = enricher(store.dims)
    rows = e.rows(record("10.102.2.7", "10.102.1.5", 1, 5432, 2, 2, 300, 400, ts=1))
    w = StoreWriter(store, lambda n: None, max_age_s=None, max_rows=None, prune_every_s=60)
    w.put(rows)
    w.put(rows)  # the same time key twice: the store refuses it
    with pytest.raises(StoreError, match="UNIQUE"):
        w.close()
    assert store.count() in (0, 1)  # one transaction per coalesced batch: all of it or none
