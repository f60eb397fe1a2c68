"""One endpoint's policy map: rules (already resolved to identities) -> LPM entries.

The datapath does two longest-prefix lookups (peer identity, then identity 0) and lets deny win.
A longer allow prefix of the SAME identity would hide a broader deny from the first lookup, so
such allows are removed here, exactly as Cilium's mapstate refuses to add allows under a deny.
"""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass

from meshctl.catalog import RuleOrigin
from meshctl.compile.ports import range_to_prefixes
from meshctl.nodestate import PROTO_ANY, Direction, PolicyEntry, PolicyKey


@dataclass(frozen=True)
class Grant:
    """A rule resolved for one endpoint: peers (0 = any) and (protocol, first, last) ranges."""

    origin: RuleOrigin
    direction: Direction
    deny: bool
    identities: tuple[int, ...]
    ports: tuple[tuple[int, int, int], ...] | None  # None = any protocol
    l7: bool = False


def _keys(grant: Grant) -> Iterable[PolicyKey]:
    for ident in grant.identities:
        if grant.ports is None:
            yield PolicyKey(grant.direction, ident, PROTO_ANY, 0, 0)
            continue
        for proto, first, last in grant.ports:
            for port, plen in range_to_prefixes(first, last):
                yield PolicyKey(grant.direction, ident, proto, port, plen)


@dataclass(frozen=True)
class MapState:
    entries: dict[PolicyKey, PolicyEntry]
    origins: dict[PolicyKey, RuleOrigin]
    ineffective_l7: tuple[tuple[RuleOrigin, RuleOrigin], ...]  # (l7 rule, L4-only rule)


def build_mapstate(grants: Iterable[Grant], cookies: dict[RuleOrigin, int]) -> MapState:
    allow: dict[PolicyKey, RuleOrigin] = {}
    deny: dict[PolicyKey, RuleOrigin] = {}
    l7_keys: dict[PolicyKey, RuleOrigin] = {}
    plain_allow: dict[PolicyKey, RuleOrigin] = {}
    for grant in grants:
        target = deny if grant.deny else allow
        for key in _keys(grant):
            cur = target.get(key)
            if cur is None or grant.origin < cur:
                target[key] = grant.origin
            if not grant.deny:
                side = l7_keys if grant.l7 else plain_allow
                if key not in side or grant.origin < side[key]:
                    side[key] = grant.origin
    # A deny covering an allow of the same identity would be shadowed by LPM: drop the allow.
    by_ident: dict[tuple[Direction, int], list[PolicyKey]] = {}
    for key in deny:
        by_ident.setdefault((key.direction, key.identity), []).append(key)
    for key in list(allow):
        for dkey in by_ident.get((key.direction, key.identity), ()):
            if dkey.covers(key):
                del allow[key]
                break
    ineffective: set[tuple[RuleOrigin, RuleOrigin]] = set()
    if l7_keys:
        plain_by_ident: dict[tuple[Direction, int], list[PolicyKey]] = {}
        for key in plain_allow:
            plain_by_ident.setdefault((key.direction, key.identity), []).append(key)
        for key, l7_origin in l7_keys.items():
            for pkey in plain_by_ident.get((key.direction, key.identity), ()):
                if pkey.covers(key) and plain_allow[pkey] != l7_origin:
                    ineffective.add((l7_origin, plain_allow[pkey]))
    origins = {**allow, **deny}
    entries = {k: PolicyEntry(cookies[o], k in deny) for k, o in origins.items()}
    return MapState(entries, origins, tuple(sorted(ineffective)))
