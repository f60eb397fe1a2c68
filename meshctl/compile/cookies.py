"""Rule cookies: a stable nonzero 32-bit id per rule origin, kept in every policy entry."""

from __future__ import annotations

import hashlib
from collections.abc import Iterable

from meshctl.catalog import RuleOrigin


def _raw(origin: RuleOrigin, salt: int) -> int:
    text = f"{origin.kind}/{origin.namespace}/{origin.name}/{origin.section}/{origin.index}"
    if salt:
        text += f"#{salt}"
    return int.from_bytes(hashlib.sha256(text.encode()).digest()[:4], "big")


def assign_cookies(origins: Iterable[RuleOrigin]) -> dict[RuleOrigin, int]:
    """Derive each cookie from its origin; collisions (and 0) rehash in sorted origin order."""
    out: dict[RuleOrigin, int] = {}
    used: set[int] = set()
    for origin in sorted(set(origins)):
        salt = 0
        cookie = _raw(origin, salt)
        while cookie == 0 or cookie in used:
            salt += 1
            cookie = _raw(origin, salt)
        used.add(cookie)
        out[origin] = cookie
    return out
