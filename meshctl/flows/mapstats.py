"""What the agent's /metrics reads from the node's pinned maps when scraped.

Map pressure: entries over max entries of every pinned map whose fill can run out (hash, LRU,
LPM and map-of-maps; arrays are always full and the ring buffer has no entries). Counting dumps
the map in batches (BPF_MAP_LOOKUP_BATCH), a few tens of ms per 100k entries, and a reading is
reused for `min_interval_s` (scrapes come every 15 s or more).

Policy match types: a flow event names the rule (cookie) that decided, not the kind of entry
(L3, L3+L4, ...) that matched. The node's live policy maps say it; they are read again only
when the node's policy revision moved (meshctl.dataplane.policy_rev: every reconcile bumps it).
"""

from __future__ import annotations

import logging
import time
from pathlib import Path

from meshctl.flows.metrics import FlowCounters, MapFill, cookie_matches

log = logging.getLogger(__name__)


class MapPressure:
    """`read()` -> MapFill per counted map of `pin_dir`, at most one walk per interval."""

    def __init__(self, pin_dir: Path, min_interval_s: float = 10.0) -> None:
        self.pin_dir, self.min_interval_s = pin_dir, min_interval_s
        self._cached: list[MapFill] = []
        self._at = -1e18

    def read(self) -> list[MapFill]:
        now = time.monotonic()
        if now - self._at >= self.min_interval_s:
            self._cached, self._at = self._walk(), now
        return self._cached

    def _walk(self) -> list[MapFill]:
        from meshctl.dataplane.libbpf import (
            BPF_MAP_TYPE_HASH,
            BPF_MAP_TYPE_HASH_OF_MAPS,
            BPF_MAP_TYPE_LPM_TRIE,
            BPF_MAP_TYPE_LRU_HASH,
            BPF_MAP_TYPE_LRU_PERCPU_HASH,
            BPF_MAP_TYPE_PERCPU_HASH,
            Map,
        )
        from meshctl.errors import MeshctlError

        counted = {BPF_MAP_TYPE_HASH, BPF_MAP_TYPE_PERCPU_HASH, BPF_MAP_TYPE_LRU_HASH,
                   BPF_MAP_TYPE_LRU_PERCPU_HASH, BPF_MAP_TYPE_LPM_TRIE, BPF_MAP_TYPE_HASH_OF_MAPS}
        out = []
        try:
            paths = sorted(p for p in self.pin_dir.iterdir() if p.is_file())
        except OSError:
            return []
        for path in paths:
            try:
                with Map.from_pin(path) as m:
                    info = m.info()
                    if info.map_type in counted:
                        keys, _values = m.dump()  # batched: C speed, not one syscall per key
                        out.append(MapFill(path.name, len(keys) // m.key_size, info.max_entries))
            except (OSError, MeshctlError) as err:  # a pin being replaced by a reload
                log.debug("map pressure of %s: %s", path, err)
        return out


class PolicyMatches:
    """Keeps `counters.matches` (cookie -> match type) in step with the node's policy maps."""

    def __init__(self, pin_dir: Path, counters: FlowCounters) -> None:
        self.pin_dir, self.counters = pin_dir, counters
        self._revision: int | None = -1

    def refresh(self) -> None:
        from meshctl.dataplane.maps import PolicyMaps
        from meshctl.dataplane.policy_rev import read_revision
        from meshctl.errors import MeshctlError

        try:
            revision = read_revision(self.pin_dir)
            if revision is not None and revision == self._revision:
                return
            with PolicyMaps.from_dir(self.pin_dir) as maps:
                policies = maps.read()
        except (OSError, MeshctlError) as err:  # not loaded yet, or being reloaded: next scrape
            log.debug("policy match types of %s: %s", self.pin_dir, err)
            return
        self.counters.matches.update(cookie_matches(policies))
        self._revision = revision
