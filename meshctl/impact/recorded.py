"""The flows the agents recorded over a window, read from the flow store (meshctl.flows.store)."""

from __future__ import annotations

import time
from pathlib import Path
from typing import Any


def recorded_flows(state_dir: Path, since: str, now: float | None = None) -> tuple[list[Any] | None, str]:
    """(flows in the window, "") or (None, why there are none to replay)."""
    from meshctl.flows.filters import FlowFilter, parse_duration
    from meshctl.flows.store import StoreError, open_stores, query_all, store_dir

    seconds = parse_duration(since, "--flows-since")
    if not store_dir(state_dir).is_dir():
        return None, f"no flow store under {store_dir(state_dir)} (is `meshctl agent` running?)"
    try:
        stores = open_stores(state_dir)
    except StoreError as err:
        return None, str(err)
    now = time.time() if now is None else now
    try:
        return query_all(stores, FlowFilter(since_ns=int((now - seconds) * 1e9))), ""
    finally:
        for s in stores:
            s.close()
