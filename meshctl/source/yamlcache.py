"""A persistent memo of parsed YAML: (file name, text) digest -> its documents and line indexes.

Parsing dominates loading a big repo: a 10,000-pod inventory takes 0.9 s to compose and build,
0.3 s to read back from here. Content-addressed, so an entry never goes stale. One cache file
per desired-state root holds one version per file name (the last one read: the cache stays
about the size of the repo; at most MAX_ENTRIES files). marshal, not pickle: plain values only,
nothing runs on load; a file whose values marshal cannot hold (YAML timestamps, binary) is
parsed every time. A missing, unreadable or foreign cache file is an empty cache; writes are
atomic (rename). Documents share their values with the cache: they are read-only (the loaders
copy before they change anything).
"""

from __future__ import annotations

import hashlib
import marshal
from pathlib import Path
from typing import Any

from meshctl.cachedir import cache_dir, write_cache
from meshctl.source.yamlines import YamlDoc, load_documents

FORMAT = "meshctl-yaml/1"  # bump when yamlines builds values or lines differently
MAX_ENTRIES = 4096
Docs = list[tuple[int, Any, dict[Any, int]]]  # per document: first line, data, field path -> line
Entry = tuple[str, Docs]  # file name, its documents


def _digest(file: str, text: str) -> str:
    h = hashlib.sha256(f"{FORMAT}\0{file}\0".encode())
    h.update(text.encode())
    return h.hexdigest()


class YamlCache:
    """`documents(text, file)` parses or recalls; `save()` writes back what this load used."""

    def __init__(self, path: Path | None, known: dict[str, Entry] | None = None) -> None:
        self.path = path
        self.known: dict[str, Entry] = known or {}
        self.used: dict[str, Entry] = {}
        self.learned = 0

    def documents(self, text: str, file: str) -> list[YamlDoc]:
        key = _digest(file, text)
        entry = self.known.get(key)
        if entry is None:
            docs = load_documents(text, file)
            entry = (file, [(d.line, d.data, d.lines) for d in docs])
            try:
                marshal.dumps(entry)
            except ValueError:  # values marshal cannot hold: parse this file every time
                return docs
            self.known[key] = entry
            self.learned += 1
        self.used[key] = entry
        return [YamlDoc(file, line, data, lines) for line, data, lines in entry[1]]

    def save(self) -> None:
        if self.path is None or not self.learned:
            return
        read = {file for file, _ in self.used.values()}
        keep = {k: v for k, v in self.known.items() if v[0] not in read}  # files this load did not read
        keep.update(self.used)
        keep = dict(list(keep.items())[-MAX_ENTRIES:])
        if write_cache(self.path, marshal.dumps({"format": FORMAT, "entries": keep})):
            self.learned = 0


def open_cache(root: Path) -> YamlCache:
    """The cache of the desired-state root `root` (empty when missing, unreadable or not ours)."""
    name = hashlib.sha256(str(Path(root).resolve()).encode()).hexdigest()[:24]
    path = cache_dir() / "yaml" / f"{name}.marshal"
    try:
        data = marshal.loads(path.read_bytes())
    except (OSError, EOFError, ValueError, TypeError):
        return YamlCache(path)
    if isinstance(data, dict) and data.get("format") == FORMAT and isinstance(data.get("entries"), dict):
        return YamlCache(path, data["entries"])
    return YamlCache(path)
