"""Where each YAML key of a document model may appear, for hints on an unknown field.

A global vocabulary would answer `description:` at the top of a CCNP with "did you mean
'description'?". Knowing the model's shape, the hint suggests a different key valid at that
place, or says where the given key belongs (`spec.description`).
"""

from __future__ import annotations

import difflib
import types
from collections.abc import Sequence
from dataclasses import dataclass, field
from functools import cache
from typing import Annotated, Any, Union, get_args, get_origin

from pydantic import BaseModel

from meshctl.model.base import SourceRef


@dataclass
class Shape:
    """The keys valid at one place of a document, and the shapes below them."""

    fields: dict[str, Shape] = field(default_factory=dict)
    items: Shape | None = None  # a list's elements
    values: Shape | None = None  # a free-keyed mapping's values


def _merge(into: Shape, tp: Any, stack: tuple[type, ...]) -> None:
    origin = get_origin(tp)
    if origin is Annotated:
        _merge(into, get_args(tp)[0], stack)
    elif origin in (Union, types.UnionType):
        for arg in get_args(tp):
            _merge(into, arg, stack)
    elif origin in (tuple, list, set, frozenset):
        for arg in get_args(tp):
            if arg is not Ellipsis:
                into.items = into.items or Shape()
                _merge(into.items, arg, stack)
    elif origin is dict:
        args = get_args(tp)
        if len(args) == 2:
            into.values = into.values or Shape()
            _merge(into.values, args[1], stack)
    elif isinstance(tp, type) and issubclass(tp, BaseModel) and tp not in stack:
        for name, info in tp.model_fields.items():
            if info.annotation is SourceRef:
                continue  # set by the loader, never written in YAML
            key = info.alias or name
            child = into.fields.setdefault(key, Shape())
            _merge(child, info.annotation, (*stack, tp))


@cache
def shape_of(model: type[BaseModel]) -> Shape:
    out = Shape()
    _merge(out, model, ())
    return out


def shape_at(shape: Shape, path: Sequence[str | int]) -> Shape | None:
    """The shape at a data path (list indexes and free mapping keys walk through)."""
    node: Shape | None = shape
    for part in path:
        if node is None:
            return None
        if isinstance(part, int):
            node = node.items
        elif part in node.fields:
            node = node.fields[part]
        else:
            node = node.values
    return node


def places(shape: Shape, key: str, prefix: str = "", depth: int = 0) -> list[str]:
    """Display paths (`spec.description`, `specs[].description`) where `key` is a field."""
    if depth > 8:
        return []
    out = [f"{prefix}.{key}" if prefix else key] if key in shape.fields else []
    for name, child in shape.fields.items():
        here = f"{prefix}.{name}" if prefix else name
        out += places(child, key, here, depth + 1)
        if child.items is not None:
            out += places(child.items, key, here + "[]", depth + 1)
    return out


def unknown_field_hint(model: type[BaseModel], path: Sequence[str | int], vocabulary: frozenset[str]) -> str:
    """The message for an unknown key at `path` (whose last part is the key) in `model`."""
    name = str(path[-1])
    shape = shape_of(model)
    here = shape_at(shape, path[:-1])
    valid = sorted(set(here.fields) - {name}) if here is not None else []
    guess = difflib.get_close_matches(name, valid, n=1, cutoff=0.75)
    if guess:
        return f"unknown field; did you mean {guess[0]!r}?"
    where = sorted(set(places(shape, name)), key=lambda p: (p.count("."), p))
    if where:
        return f"unknown field here; {name} belongs in {_parent(where[0])} ({where[0]})"
    others = sorted((vocabulary | set(_all_keys(shape))) - {name})
    guess = difflib.get_close_matches(name, others, n=1, cutoff=0.75)
    if guess:
        found = sorted(set(places(shape, guess[0])), key=lambda p: (p.count("."), p))
        at = f" (at {found[0]})" if found else ""
        return f"unknown field; did you mean {guess[0]!r}{at}?"
    return "unknown field"


def _parent(display: str) -> str:
    parent = display.rpartition(".")[0]
    return parent or "the top level"


def _all_keys(shape: Shape, depth: int = 0) -> set[str]:
    if depth > 8:
        return set()
    keys = set(shape.fields)
    for child in shape.fields.values():
        keys |= _all_keys(child, depth + 1)
        if child.items is not None:
            keys |= _all_keys(child.items, depth + 1)
        if child.values is not None:
            keys |= _all_keys(child.values, depth + 1)
    return keys
