"""Shared formatting of a change's before/after values for people (text and markdown plans).

A plan is read by people, so a value is shown as data only while it is short: a Maglev table
(base64 of thousands of slots) is shown by its slot count and digest (the change's reason says
how its slots move), and any other value over LONG_VALUE characters by its length and digest.
The full values stay in `-o json`.
"""

from __future__ import annotations

import base64
import hashlib
import json
from typing import Any

from meshctl.plan.action import Action
from meshctl.plan.change import Change, ChangeKind
from meshctl.plan.codec import IMPLICIT

LONG_VALUE = 200
DIGEST_CHARS = 12


def _digest(text: str) -> str:
    return "sha256:" + hashlib.sha256(text.encode()).hexdigest()[:DIGEST_CHARS]


def _maglev(v: Any) -> str:
    """A packed Maglev table (nodestate._pack_ids: 4 bytes a slot in base64)."""
    if not v:
        return "(none)"
    slots = len(base64.b64decode(v)) // 4
    return f"<{slots} slots, {_digest(v)}>"


def _fmt(v: Any) -> str:
    if isinstance(v, bool):
        return "true" if v else "false"
    text = f'"{v}"' if isinstance(v, str) else str(v)
    if len(text) > LONG_VALUE:
        return f"<{len(text)} characters, {_digest(text)}>"
    return text



def _field(change: Change, key: str, v: Any) -> str:
    if change.kind is ChangeKind.LB_SERVICE and key == "maglev":
        return _maglev(v)
    if (change.kind, key) in ((ChangeKind.HTTP_RULE, "rules"), (ChangeKind.DNS_RULE, "names"),
                              (ChangeKind.FQDN, "selectors")):
        return json.dumps(v)
    return _fmt(IMPLICIT.get(key) if v is None else v)


def value_lines(change: Change) -> list[str]:
    """`field = value` for creates/deletes, `field: old -> new` for updates; sorted like the file."""
    b, a = change.before or {}, change.after or {}
    if change.action is Action.CREATE:
        return [f"{k} = {_field(change, k, a[k])}" for k in sorted(a)]
    if change.action is Action.DELETE:
        return [f"{k} = {_field(change, k, b[k])}" for k in sorted(b)]
    out = []
    for k in sorted({*b, *a}):
        if b.get(k) != a.get(k):
            out.append(f"{k}: {_field(change, k, b.get(k))} -> {_field(change, k, a.get(k))}")
    return out
