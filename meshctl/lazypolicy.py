"""Policy maps made only when read: observed ones known by digest, compiled ones kept as tuples.

Steady GitOps case: every node already holds exactly the compiled maps, so decoding ~900
distinct inner maps into entries is wasted work. Observe reads the raw dump, hashes it, and
when meshctl.observe.mapcache knows that raw digest it hands back a LazyPolicyMap that knows
the sha256 of its canonical text. The plan compares it with the compiled map by that digest
and, when equal, takes the compiled map's text (so fingerprints are byte-identical); any
other read decodes the raw bytes first. A changed map has other raw bytes: no digest, full
decode. Light module (no libbpf): meshctl.plan imports it.

The compiler's side of the same idea: a CompiledPolicyMap keeps its sorted key tuples and
values, and makes (interns) its PolicyKeys only when someone reads the keys. 50,000 pods
compile to about 2 million distinct entries; a plan of an unchanged map only needs its
canonical text, which the tuples give directly.
"""

from __future__ import annotations

import hashlib
from collections.abc import Callable, Iterator, Mapping, Sequence, ValuesView
from typing import Any

from meshctl.nodestate import (
    ITEMS_SLOT,
    POLICY_KEYS,
    FrozenMap,
    PolicyEntry,
    PolicyKey,
    PolicyKeyTuple,
    intern_policy_key,
    policy_map_sha,
    policy_map_text,
)

Decoder = Callable[[bytes, bytes], FrozenMap[PolicyKey, PolicyEntry]]


def text_sha(text: str) -> str:
    """The digest the map cache records for a canonical policy map text."""
    return hashlib.sha256(text.encode()).hexdigest()


class LazyPolicyMap(FrozenMap[PolicyKey, PolicyEntry]):
    """A FrozenMap over one raw (keys, values) dump; `text_sha` is its canonical text's sha256."""

    __slots__ = ("_count", "_decode", "_raw", "text_sha")

    def __init__(self, keys: bytes, values: bytes, count: int, sha: str, decode: Decoder) -> None:
        self._raw: tuple[bytes, bytes] | None = (keys, values)
        self._count = count
        self._decode = decode
        self.text_sha = sha
        self._no_cache()

    @property
    def pending(self) -> bool:
        """True while the entries have not been decoded."""
        return self._raw is not None

    @property  # type: ignore[override]
    def _items(self) -> tuple[tuple[PolicyKey, PolicyEntry], ...]:
        if self._raw is None:
            return ITEMS_SLOT.__get__(self, FrozenMap)  # type: ignore[no-any-return]
        table = self._decode(*self._raw)
        if self._text is None:
            self._text = table._text
        ITEMS_SLOT.__set__(self, table._items)
        self._raw = None
        return ITEMS_SLOT.__get__(self, FrozenMap)  # type: ignore[no-any-return]

    def __len__(self) -> int:
        return self._count

    def canonical_text(self, make: Callable[[FrozenMap[PolicyKey, PolicyEntry]], str]) -> str:
        if self._text is None:
            self._items  # noqa: B018 - decoding sets the text
        return super().canonical_text(make)


class CompiledPolicyMap(FrozenMap[PolicyKey, PolicyEntry]):
    """A FrozenMap over sorted (direction, identity, protocol, port, port_prefix) tuples and their
    values; equal to the FrozenMap of the same entries in every respect."""

    __slots__ = ("_rows",)

    def __init__(self, keys: Sequence[PolicyKeyTuple], values: Sequence[PolicyEntry]) -> None:
        self._rows: tuple[Sequence[PolicyKeyTuple], Sequence[PolicyEntry]] | None = (keys, values)
        self._no_cache()

    @property  # type: ignore[override]
    def _items(self) -> tuple[tuple[PolicyKey, PolicyEntry], ...]:
        rows = self._rows
        if rows is not None:
            known = POLICY_KEYS
            keys = [known.get(t) or intern_policy_key(t) for t in rows[0]]
            ITEMS_SLOT.__set__(self, tuple(zip(keys, rows[1], strict=True)))
            self._rows = None
        return ITEMS_SLOT.__get__(self, FrozenMap)  # type: ignore[no-any-return]

    def __len__(self) -> int:
        rows = self._rows
        return len(rows[0]) if rows is not None else len(self._items)

    def values(self) -> ValuesView[PolicyEntry]:  # type: ignore[override]
        return _CompiledValues(self)

    def canonical_text(self, make: Callable[[FrozenMap[PolicyKey, PolicyEntry]], str]) -> str:
        """A policy map's text (policy_map_text), from the tuples while the keys are not made."""
        rows = self._rows
        if self._text is None and rows is not None:
            self._text = "[" + ",".join(
                f"[{d},{i},{p},{port},{plen},{v.row_tail}"
                for (d, i, p, port, plen), v in zip(rows[0], rows[1], strict=True)
            ) + "]"
        return super().canonical_text(make)


class _CompiledValues(ValuesView[PolicyEntry]):
    def __iter__(self) -> Iterator[PolicyEntry]:
        m: CompiledPolicyMap = self._mapping  # type: ignore[assignment]
        rows = m._rows
        return iter(rows[1]) if rows is not None else (v for _, v in m._items)


def maps_equal(observed: Mapping[Any, Any], intended: Mapping[Any, Any]) -> bool:
    """observed == intended for policy maps; an equal pair ends up sharing one canonical text.

    A pending lazy map is compared by digest (no decode); otherwise by value, and the intended
    map takes the observed map's text (formatted for the observed fingerprint anyway)."""
    if isinstance(observed, LazyPolicyMap) and observed.pending and isinstance(intended, FrozenMap):
        if len(observed) != len(intended) or policy_map_sha(intended) != observed.text_sha:
            return False
        observed.adopt_text(intended)
        return True
    equal = observed == intended
    if equal and isinstance(observed, FrozenMap) and isinstance(intended, FrozenMap):
        policy_map_text(observed)
        intended.adopt_text(observed)
    return equal


def map_cookies(entries: Mapping[PolicyKey, PolicyEntry]) -> frozenset[int]:
    """The cookies of a policy map's entries; a map that knows them (the incremental plan's
    untouched maps, meshctl.app.increment.stubs) is not read for them."""
    known = getattr(entries, "cookies", None)
    if isinstance(known, frozenset):
        return known
    return frozenset(e.cookie for e in entries.values())
