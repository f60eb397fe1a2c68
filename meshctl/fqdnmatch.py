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
from dataclasses import dataclass
from functools import lru_cache

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


__all__ = ["FqdnSelector", "name_error", "normalize", "pattern_error", "pattern_regex"]
