"""Validate a YAML document against a model, turning pydantic errors into one SourceError.

pydantic's `loc` is the field path in the document (YAML keys, list indexes) plus, sometimes,
internal tags (union members, `[key]`); we keep the part that exists in the data, append a
missing field's name, and look the line up in the document's index.
"""

from __future__ import annotations

import difflib
from collections.abc import Sequence
from functools import cache
from typing import Any, TypeVar

from pydantic import BaseModel, ValidationError

from meshctl.errors import SourceError
from meshctl.source.fields import unknown_field_hint
from meshctl.source.yamlines import FieldPath, YamlDoc

M = TypeVar("M", bound=BaseModel)


def validate_doc(model: type[M], doc: YamlDoc, data: Any = None) -> M:
    """model.model_validate(doc.data) or the first error as file:line: path: message."""
    try:
        return model.model_validate(doc.data if data is None else data)
    except ValidationError as err:
        raise to_source_error(err, doc, model) from None


def to_source_error(err: ValidationError, doc: YamlDoc, model: type[BaseModel] | None = None) -> SourceError:
    first = pick(err)
    path = real_path(doc.data, first["loc"])
    message = describe(first, all_aliases(), model, path)
    more = err.error_count() - 1
    if more:
        message += f" (and {more} more error{'s' if more > 1 else ''})"
    return doc.error(path, message)


def pick(err: ValidationError) -> Any:
    """The error to show: an unknown field first (a typo also makes its real name "missing")."""
    errors = err.errors(include_url=False)
    return next((e for e in errors if e["type"] == "extra_forbidden"), errors[0])


def real_path(data: Any, loc: Sequence[str | int]) -> FieldPath:
    """The prefix of `loc` that walks through `data`, plus a final missing key if any."""
    path: list[str | int] = []
    node = data
    for i, part in enumerate(loc):
        if _has(node, part):
            node = node[part]
        else:
            if i == len(loc) - 1 and isinstance(part, str) and isinstance(node, dict):
                path.append(part)  # a missing required field
            break
        path.append(part)
    return tuple(path)


def _has(node: Any, part: str | int) -> bool:
    if isinstance(node, dict):
        return isinstance(part, str) and part in node
    return isinstance(node, list) and isinstance(part, int) and 0 <= part < len(node)


def describe(
    error: Any, aliases: frozenset[str], model: type[BaseModel] | None = None, path: FieldPath = ()
) -> str:
    """One clause for a pydantic error; with the document's model, unknown-field hints name
    a different key valid at that place or where the given key belongs."""
    kind, msg, value = error["type"], error["msg"], error.get("input")
    if kind == "extra_forbidden":
        name = str(error["loc"][-1])
        if model is not None and path and path[-1] == name:
            return unknown_field_hint(model, path, aliases)
        guess = difflib.get_close_matches(name, aliases - {name}, n=1, cutoff=0.75)
        return "unknown field" + (f"; did you mean {guess[0]!r}?" if guess else "")
    if kind == "missing":
        return "required field is missing"
    if kind == "value_error":
        return msg.removeprefix("Value error, ")
    if kind == "string_type":
        return f"{value!r} is not a string (quote it in YAML)"
    if kind in ("list_type", "tuple_type"):
        return f"expected a list (got {value!r})"
    if kind in ("dict_type", "model_type", "model_attributes_type"):
        return f"expected a mapping (got {value!r})"
    if kind in ("literal_error", "enum"):
        return f"{value!r} is not allowed: {msg[0].lower()}{msg[1:]}"
    return f"{msg} (got {value!r})"


@cache
def all_aliases() -> frozenset[str]:
    """Every YAML key of every model: the vocabulary for did-you-mean hints."""
    from meshctl.model import check, cilium, config, inventory, k8s, meta, selector, service

    names: set[str] = set()
    for module in (check, cilium, config, inventory, k8s, meta, selector, service):
        for obj in vars(module).values():
            if isinstance(obj, type) and issubclass(obj, BaseModel):
                names.update(info.alias or name for name, info in obj.model_fields.items())
    return frozenset(names)
