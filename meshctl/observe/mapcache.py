"""A persistent memo: raw inner policy map dump digest -> sha256 of its canonical text.

Content-addressed and a pure function of the bytes (for one decoder FORMAT), so one file
serves every cluster and node and never goes stale: a map changed behind meshctl's back has
other raw bytes, misses, and is decoded in full. Learned whenever observe decodes a map (the
apply's verification observe included), so the next plan of the same state decodes nothing.
A missing, unreadable or foreign file is an empty cache; writes are atomic (rename).
"""

from __future__ import annotations

import hashlib
import json
from pathlib import Path

from meshctl.cachedir import cache_dir, write_cache

FORMAT = "meshctl-policy-maps/2"  # bump when the decoder or the canonical text changes
# /2: lossless decoding; /1 entries may map a dump holding hand-made keys to a compiled text
MAX_ENTRIES = 50_000
FILE = "policy-maps.json"


def raw_sha(keys: bytes, values: bytes) -> str:
    h = hashlib.sha256(len(keys).to_bytes(8, "little"))
    h.update(keys)
    h.update(values)
    return h.hexdigest()


class MapCache:
    """raw dump sha -> canonical text sha; `learn` adds, `save` writes what was learned."""

    def __init__(self, known: dict[str, str] | None = None, path: Path | None = None) -> None:
        self.known: dict[str, str] = known if known is not None else {}
        self.path = path
        self.learned = 0

    def get(self, raw: str) -> str | None:
        return self.known.get(raw)

    def learn(self, raw: str, text_sha: str) -> None:
        if self.known.get(raw) != text_sha:
            self.known.pop(raw, None)  # re-insert: newest last, oldest dropped first
            self.known[raw] = text_sha
            self.learned += 1

    def save(self) -> None:
        if self.path is None or not self.learned:
            return
        maps = self.known
        if len(maps) > MAX_ENTRIES:
            maps = dict(list(maps.items())[-MAX_ENTRIES:])
        body = json.dumps({"format": FORMAT, "maps": maps}, separators=(",", ":"))
        if write_cache(self.path, body.encode()):
            _LOADED.pop(str(self.path), None)
            self.learned = 0


_LOADED: dict[str, tuple[tuple[int, int], dict[str, str]]] = {}  # path -> (mtime, size), maps


def load(path: Path | None = None) -> MapCache:
    """The cache file's content (empty when missing or not ours); re-read only when it changed."""
    path = path or cache_dir() / FILE
    try:
        st = path.stat()
    except OSError:
        return MapCache({}, path)
    stamp = (st.st_mtime_ns, st.st_size)
    hit = _LOADED.get(str(path))
    if hit is None or hit[0] != stamp:
        maps: dict[str, str] = {}
        try:
            data = json.loads(path.read_text())
            if isinstance(data, dict) and data.get("format") == FORMAT and isinstance(data.get("maps"), dict):
                maps = {str(k): str(v) for k, v in data["maps"].items()}
        except (OSError, ValueError):
            maps = {}
        hit = _LOADED[str(path)] = (stamp, maps)
    return MapCache(dict(hit[1]), path)
