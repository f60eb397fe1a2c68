"""Counts and durations of applies and drift checks, kept next to the state for /metrics.

Applies and drift checks run in short-lived CLI processes; Prometheus scrapes the long-lived
node agents. So each operation adds one line of totals to `operations.json` in the state dir
(under an flock, atomically replaced) and every agent exports that file when scraped: the
counters survive restarts and only ever grow, as a Prometheus counter must.
"""

from __future__ import annotations

import contextlib
import fcntl
import json
import time
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from meshctl.state.atomic import atomic_write

FILE = "operations.json"
# Histogram buckets of operation durations in seconds (an apply verifies node by node).
BUCKETS = (0.5, 1.0, 2.5, 5.0, 10.0, 30.0, 60.0, 120.0, 300.0, 600.0)


@dataclass
class OperationTotals:
    """One kind of operation ("apply", "drift"): results counted, durations bucketed."""

    results: dict[str, int] = field(default_factory=dict)  # result -> count
    buckets: list[int] = field(default_factory=lambda: [0] * len(BUCKETS))  # not cumulative
    count: int = 0
    seconds: float = 0.0

    def add(self, result: str, seconds: float) -> None:
        self.results[result] = self.results.get(result, 0) + 1
        self.count += 1
        self.seconds += seconds
        for i, bound in enumerate(BUCKETS):
            if seconds <= bound:
                self.buckets[i] += 1
                break

    def to_json(self) -> dict[str, Any]:
        return {"results": self.results, "buckets": self.buckets, "count": self.count,
                "seconds": self.seconds}

    @classmethod
    def from_json(cls, d: dict[str, Any]) -> OperationTotals:
        buckets = [int(b) for b in d.get("buckets", [])]
        if len(buckets) != len(BUCKETS):
            buckets = [0] * len(BUCKETS)
        return cls({str(k): int(v) for k, v in d.get("results", {}).items()}, buckets,
                   int(d.get("count", 0)), float(d.get("seconds", 0.0)))


def read(state_dir: Path) -> dict[str, OperationTotals]:
    """operation -> totals; a missing or unreadable file counts as no operations yet."""
    try:
        doc = json.loads((state_dir / FILE).read_text())
        return {str(op): OperationTotals.from_json(v) for op, v in doc.items() if isinstance(v, dict)}
    except (OSError, ValueError, TypeError, AttributeError):
        return {}


def record(state_dir: Path, operation: str, result: str, seconds: float) -> None:
    """Add one finished operation. Never fails the operation it measures (metrics are best
    effort: an unwritable state dir already fails the operation itself)."""
    with contextlib.suppress(OSError):
        state_dir.mkdir(parents=True, exist_ok=True)
        with _locked(state_dir):
            totals = read(state_dir)
            totals.setdefault(operation, OperationTotals()).add(result, seconds)
            doc = {op: t.to_json() for op, t in sorted(totals.items())}
            atomic_write(state_dir / FILE, json.dumps(doc, sort_keys=True).encode())


@contextlib.contextmanager
def measured(state_dir: Path, operation: str) -> Iterator[dict[str, str]]:
    """`with measured(dir, "apply") as out: ...; out["result"] = "success"`: recorded on exit;
    an exception records result "error" (unless the block set another) and propagates."""
    out = {"result": "error"}
    t0 = time.monotonic()
    try:
        yield out
    finally:
        record(state_dir, operation, out["result"], time.monotonic() - t0)


@contextlib.contextmanager
def _locked(state_dir: Path) -> Iterator[None]:
    with open(state_dir / f".{FILE}.lock", "a") as fh:
        fcntl.flock(fh, fcntl.LOCK_EX)
        try:
            yield
        finally:
            fcntl.flock(fh, fcntl.LOCK_UN)
