"""Shared formatting of a change's before/after values (pure string formatting, no logic)."""

from __future__ import annotations

from typing import Any

from meshctl.plan.action import Action
from meshctl.plan.change import Change


def _fmt(v: Any) -> str:
    if isinstance(v, bool):
        return "true" if v else "false"
    if isinstance(v, str):
        return f'"{v}"'
    return str(v)


def value_lines(change: Change) -> list[str]:
    """`field = value` for creates/deletes, `field: old -> new` for updates; sorted like the file."""
    b, a = change.before or {}, change.after or {}
    if change.action is Action.CREATE:
        return [f"{k} = {_fmt(a[k])}" for k in sorted(a)]
    if change.action is Action.DELETE:
        return [f"{k} = {_fmt(b[k])}" for k in sorted(b)]
    out = []
    for k in sorted({*b, *a}):
        if b.get(k) != a.get(k):
            out.append(f"{k}: {_fmt(b.get(k))} -> {_fmt(a.get(k))}")
    return out
