"""Maps of a baseline that the incremental plan knows without their entries.

A policy map the change does not touch is the same on both sides of the plan: the plan needs
its digest (fingerprints), its size (capacity) and its cookies (the plan's rules), never its
rows. Anything else that reads it means the plan needs more than the baseline holds: the read
raises NeedsFullPlan and the command plans in full instead.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable, Iterator
from collections.abc import Set as AbstractSet
from typing import Any

from meshctl.nodestate import ITEMS_SLOT, FrozenMap, PolicyEntry, PolicyKey


class NeedsFullPlan(Exception):
    """The incremental plan cannot decide something without the full state: plan in full."""


class KnownPolicyMap(FrozenMap[PolicyKey, PolicyEntry]):
    """A policy map known by the sha256 of its canonical text, its size and its cookies."""

    __slots__ = ("cookies", "count", "text_sha")

    def __init__(self, text_sha: str, count: int, cookies: frozenset[int]) -> None:
        self.text_sha = text_sha
        self.count = count
        self.cookies = cookies
        self._no_cache()

    @property  # type: ignore[override]
    def _items(self) -> tuple[tuple[PolicyKey, PolicyEntry], ...]:
        raise NeedsFullPlan(f"the entries of an untouched policy map ({self.text_sha[:12]})")

    def __len__(self) -> int:
        return self.count

    def __hash__(self) -> int:
        return hash(self.text_sha)

    def __eq__(self, other: object) -> bool:
        if self is other:
            return True
        if isinstance(other, KnownPolicyMap):
            return self.text_sha == other.text_sha
        raise NeedsFullPlan("an untouched policy map compared with another map")


class RowsMap(FrozenMap[Any, Any]):
    """A FrozenMap made from compact rows on first read, its canonical text known up front."""

    __slots__ = ("_count", "_make")

    def __init__(self, make: Callable[[], tuple[tuple[Any, Any], ...]], count: int, text: str) -> None:
        self._make: Callable[[], tuple[tuple[Any, Any], ...]] | None = make
        self._count = count
        self._no_cache(text)

    @property  # type: ignore[override]
    def _items(self) -> tuple[tuple[Any, Any], ...]:
        if self._make is not None:
            ITEMS_SLOT.__set__(self, self._make())
            self._make = None
        return ITEMS_SLOT.__get__(self, FrozenMap)  # type: ignore[no-any-return]

    def __len__(self) -> int:
        return self._count


class RowsSet(AbstractSet[Any]):
    """A frozen set made from compact rows on first read, its size known up front: a plan whose
    two sides share one (a node's attachments) never makes its 20,000 members."""

    __slots__ = ("_count", "_make", "_set")

    def __init__(self, make: Callable[[], Iterable[Any]], count: int) -> None:
        self._make: Callable[[], Iterable[Any]] | None = make
        self._count = count
        self._set: frozenset[Any] | None = None

    def _members(self) -> frozenset[Any]:
        if self._set is None:
            assert self._make is not None
            self._set = frozenset(self._make())
            self._make = None
        return self._set

    @classmethod
    def _from_iterable(cls, it: Iterable[Any]) -> frozenset[Any]:  # what `-`, `&`, `|` return
        return frozenset(it)

    def __contains__(self, item: object) -> bool:
        return item in self._members()

    def __iter__(self) -> Iterator[Any]:
        return iter(self._members())

    def __len__(self) -> int:
        return self._count

    def __hash__(self) -> int:
        return hash(self._members())

    def __eq__(self, other: object) -> bool:
        if self is other:
            return True
        if isinstance(other, RowsSet):
            other = other._members()
        return self._members() == other
