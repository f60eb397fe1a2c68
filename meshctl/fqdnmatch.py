"""DNS names as Cilium matches them in `toFQDNs` and `rules.dns` (pkg/fqdn/matchpattern).

One matcher serves both, so a name a DNS rule lets through and a name a toFQDNs selector
selects are judged alike. Names compare lower-case with the root dot optional. In a
`matchPattern`, `*` stands for any run of name characters within one label (`*.cilium.io`
matches `sub.cilium.io`, not `cilium.io` or `a.sub.cilium.io`); `*` alone matches every name;
a leading `**.` matches one or more whole labels (`**.cilium.io` matches `a.cilium.io` and
`a.b.cilium.io`, not `cilium.io`), and `**` anywhere else is refused, as Cilium 1.19 does.
"""

from __future__ import annotations

import re
from collections.abc import Iterable
from dataclasses import dataclass
from functools import cache, lru_cache

_LABEL = "[-a-z0-9_]"
_NAME = re.compile(r"^([-a-z0-9_]+\.?)+$")
_PATTERN = re.compile(r"^([-a-z0-9_*]+\.?)+$")
MAX_NAME = 255


def normalize(name: str) -> str:
    """Lower-case, without the root dot (the form shown in plans and flows)."""
    return name.strip().lower().rstrip(".")


def name_error(name: str) -> str | None:
    """Why `name` is not a valid matchName (None when it is)."""
    n = name.strip().lower()
    if not n or not _NAME.match(n) or len(n) > MAX_NAME:
        return (f"{name!r} is not a DNS name: letters, digits, '-', '_' and '.' only "
                "(use matchPattern for wildcards)")
    return None


def pattern_error(pattern: str) -> str | None:
    """Why `pattern` is not a valid matchPattern (None when it is)."""
    p = pattern.strip().lower()
    if p == "*":
        return None
    if not p or not _PATTERN.match(p) or len(p) > MAX_NAME:
        return (f"{pattern!r} is not a DNS pattern: letters, digits, '-', '_', '.' and '*' only, "
                "e.g. '*.example.com'")
    if "**" in (p[3:] if p.startswith("**.") else p):
        return (f"{pattern!r}: '**' is allowed only as a leading '**.' (one or more labels, "
                "e.g. '**.example.com'); '*' matches within one label")
    return None


@lru_cache(maxsize=4096)
def pattern_regex(pattern: str) -> re.Pattern[str]:
    """The full-match regex of a valid matchPattern over normalized names."""
    p = normalize(pattern)
    if p == "*":
        return re.compile(rf"^({_LABEL}+(\.{_LABEL}+)*)?$")
    prefix = ""
    if p.startswith("**."):
        prefix, p = rf"({_LABEL}+\.)+", p[3:]
    body = "".join(f"{_LABEL}*" if ch == "*" else re.escape(ch) for ch in p)
    return re.compile(f"^{prefix}{body}$")


@dataclass(frozen=True, order=True)
class FqdnSelector:
    """One `matchName` or `matchPattern` entry, normalized (a pattern without `*` is a name)."""

    name: str = ""
    pattern: str = ""

    @classmethod
    def of(cls, match_name: str | None = None, match_pattern: str | None = None) -> FqdnSelector:
        if match_pattern is not None and "*" in match_pattern:
            return cls(pattern=normalize(match_pattern) or "*")
        return cls(name=normalize(match_name if match_name is not None else match_pattern or ""))

    @property
    def text(self) -> str:
        return self.pattern or self.name

    @property
    def label(self) -> str:
        """The label of the identity that stands for the IPs this selector learns."""
        return f"fqdn:{self.text}"

    @property
    def selects_everything(self) -> bool:
        return self.pattern == "*"

    def matches(self, name: str) -> bool:
        n = normalize(name)
        if self.name:
            return n == self.name
        return bool(pattern_regex(self.pattern).match(n))

    def __str__(self) -> str:
        return f"matchPattern: {self.pattern}" if self.pattern else f"matchName: {self.name}"


def _labels_overlap(p: str, q: str) -> bool:
    """Whether one label matches both label patterns (`*`: any run of label characters)."""

    @cache
    def joint(i: int, j: int) -> bool:  # can p[i:] and q[j:] produce the same text?
        if i == len(p) and j == len(q):
            return True
        if i < len(p) and p[i] == "*" and joint(i + 1, j):
            return True
        if j < len(q) and q[j] == "*" and joint(i, j + 1):
            return True
        if i == len(p) or j == len(q):
            return False
        a, b = p[i], q[j]
        if a == "*" and b != "*":
            return joint(i, j + 1)  # the star takes q's character
        if b == "*" and a != "*":
            return joint(i + 1, j)
        return a == b and joint(i + 1, j + 1)

    return joint(0, 0)


def overlaps(a: FqdnSelector, b: FqdnSelector) -> bool:
    """Whether some name matches both selectors: its IPs then need an identity of the pair."""
    if a.selects_everything or b.selects_everything:
        return True

    def labels(s: FqdnSelector) -> tuple[bool, list[str]]:
        t = s.text
        return (True, t[3:].split(".")) if t.startswith("**.") else (False, t.split("."))

    (deep_a, la), (deep_b, lb) = labels(a), labels(b)
    if deep_a != deep_b:  # `**.` takes one label or more: the other must be longer
        if (len(lb) <= len(la)) if deep_a else (len(la) <= len(lb)):
            return False
    elif not deep_a and len(la) != len(lb):
        return False
    n = min(len(la), len(lb))
    return all(_labels_overlap(x, y) for x, y in zip(la[len(la) - n:], lb[len(lb) - n:], strict=True))


def selector_sets(selectors: Iterable[FqdnSelector], limit: int = 256) -> list[tuple[FqdnSelector, ...]]:
    """The sets of two or more selectors that overlap pairwise (the overlap graph's cliques), in a
    stable order, at most `limit`: the identities a name several selectors select can take."""
    order = sorted(set(selectors), key=lambda s: s.text)
    near = [{j for j, other in enumerate(order) if j != i and overlaps(sel, other)}
            for i, sel in enumerate(order)]
    out: list[tuple[FqdnSelector, ...]] = []

    def grow(members: tuple[int, ...], candidates: list[int]) -> None:
        for j in candidates:
            if len(out) >= limit:
                return
            bigger = (*members, j)
            if len(bigger) >= 2:
                out.append(tuple(order[k] for k in bigger))
            grow(bigger, [k for k in candidates if k > j and k in near[j]])

    grow((), list(range(len(order))))
    return out


__all__ = ["FqdnSelector", "name_error", "normalize", "overlaps", "pattern_error", "pattern_regex",
           "selector_sets"]
