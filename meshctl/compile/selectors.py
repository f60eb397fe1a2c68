"""Label selectors over identities (label sets), with a per-selector cache.

Selectors are matched against identities, never pods: 10,000 pods usually share a few thousand
label sets, and a selector's result is computed once through an inverted label index.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from typing import Any

from meshctl.compile.labels import split_label, split_selector_key

OPERATORS = ("In", "NotIn", "Exists", "DoesNotExist")


@dataclass(frozen=True, order=True)
class Requirement:
    """One term of a selector; source "any" matches labels of every source."""

    source: str
    key: str
    operator: str
    values: tuple[str, ...] = ()

    def __str__(self) -> str:
        key = self.key if self.source == "any" else f"{self.source}:{self.key}"
        if self.operator == "In" and len(self.values) == 1:
            return f"{key}={self.values[0]}"
        if self.operator in ("Exists", "DoesNotExist"):
            return f"{key} {self.operator}"
        return f"{key} {self.operator} ({','.join(self.values)})"


@dataclass(frozen=True, order=True)
class Selector:
    """A conjunction of requirements; no requirements = every identity (the wildcard)."""

    requirements: tuple[Requirement, ...] = ()

    @property
    def is_wildcard(self) -> bool:
        return not self.requirements

    def with_requirement(self, req: Requirement) -> Selector:
        return Selector(tuple(sorted({*self.requirements, req})))

    def has_key(self, source: str, key: str) -> bool:
        return any(r.key == key and r.source in (source, "any") for r in self.requirements)

    def has_key_prefix(self, prefix: str) -> bool:
        return any(r.key.startswith(prefix) for r in self.requirements)

    def matches(self, labels: Iterable[str]) -> bool:
        """Direct evaluation over one label set (the reference evaluator uses this)."""
        parsed = [split_label(lb) for lb in labels]
        for req in self.requirements:
            values = {v for s, k, v in parsed if k == req.key and req.source in ("any", s)}
            if req.operator == "In" and not values & set(req.values):
                return False
            if req.operator == "NotIn" and values & set(req.values):
                return False
            if req.operator == "Exists" and not values:
                return False
            if req.operator == "DoesNotExist" and values:
                return False
        return True

    def __str__(self) -> str:
        return "{" + ", ".join(str(r) for r in self.requirements) + "}"


def parse_selector(doc: Mapping[str, Any] | None, where: str = "") -> Selector:
    """A Kubernetes LabelSelector dict (matchLabels / matchExpressions) -> Selector."""
    from meshctl.errors import CompileError

    if not doc:
        return Selector()
    reqs: set[Requirement] = set()
    for key, value in (doc.get("matchLabels") or {}).items():
        source, k = split_selector_key(str(key))
        reqs.add(Requirement(source, k, "In", ("" if value is None else str(value),)))
    for expr in doc.get("matchExpressions") or ():
        op = str(expr.get("operator", ""))
        if op not in OPERATORS:
            raise CompileError(
                f"{where}: matchExpressions operator {op!r} is not one of {', '.join(OPERATORS)}"
            )
        source, k = split_selector_key(str(expr.get("key", "")))
        values = tuple(sorted(str(v) for v in (expr.get("values") or ())))
        reqs.add(Requirement(source, k, op, values))
    return Selector(tuple(sorted(reqs)))


class _SetsOnRead(dict[Any, Any]):
    """A dumped index table: each tuple of identities becomes a set when first read (a replan
    reads a few of thousands)."""

    def get(self, key: Any, default: Any = None) -> Any:
        value = super().get(key, default)
        if isinstance(value, tuple):
            value = self[key] = set(value)
        return value


class SelectorIndex:
    """Inverted index of identity label sets; `select` is cached per selector."""

    def __init__(self, identities: Mapping[int, Iterable[str]]) -> None:
        self.all: frozenset[int] = frozenset(identities)
        self._kv: dict[tuple[str, str], set[int]] = {}
        self._skv: dict[tuple[str, str, str], set[int]] = {}
        self._k: dict[str, set[int]] = {}
        self._sk: dict[tuple[str, str], set[int]] = {}
        self._cache: dict[Selector, frozenset[int]] = {}
        for ident, labels in identities.items():
            for label in labels:
                s, k, v = split_label(label)
                self._kv.setdefault((k, v), set()).add(ident)
                self._skv.setdefault((s, k, v), set()).add(ident)
                self._k.setdefault(k, set()).add(ident)
                self._sk.setdefault((s, k), set()).add(ident)

    def dump(self) -> tuple[Any, ...]:
        """The index as plain values for `restored` (marshal-able; tuples load faster than sets)."""
        def plain(table: dict[Any, set[int]]) -> dict[Any, tuple[int, ...]]:
            return {k: tuple(v) for k, v in table.items()}

        return tuple(self.all), plain(self._kv), plain(self._skv), plain(self._k), plain(self._sk)

    @classmethod
    def restored(cls, data: tuple[Any, ...]) -> SelectorIndex:
        self = cls.__new__(cls)
        all_ids, *tables = data
        self.all = frozenset(all_ids)
        self._kv, self._skv, self._k, self._sk = (_SetsOnRead(t) for t in tables)
        self._cache = {}
        return self

    def _with_key(self, req: Requirement) -> set[int]:
        return (
            self._k.get(req.key, set()) if req.source == "any" else self._sk.get((req.source, req.key), set())
        )

    def _with_value(self, req: Requirement, value: str) -> set[int]:
        if req.source == "any":
            return self._kv.get((req.key, value), set())
        return self._skv.get((req.source, req.key, value), set())

    def _eval(self, req: Requirement) -> frozenset[int] | set[int]:
        if req.operator == "Exists":
            return self._with_key(req)
        if req.operator == "DoesNotExist":
            return self.all - self._with_key(req)
        hits: set[int] = set()
        for value in req.values:
            hits |= self._with_value(req, value)
        return hits if req.operator == "In" else self.all - hits

    def select(self, selector: Selector) -> frozenset[int]:
        cached = self._cache.get(selector)
        if cached is not None:
            return cached
        result: frozenset[int] | set[int] = self.all
        for req in sorted(selector.requirements, key=lambda r: r.operator not in ("In", "Exists")):
            result = result & self._eval(req)
            if not result:
                break
        out = frozenset(result)
        self._cache[selector] = out
        return out
