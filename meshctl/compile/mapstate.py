"""One endpoint's policy map: rules (already resolved to identities) -> LPM entries.

The datapath does two longest-prefix lookups (peer identity, then identity 0) and lets deny win.
A longer allow prefix of the SAME identity would hide a broader deny from the first lookup, so
such allows are removed here, exactly as Cilium's mapstate refuses to add allows under a deny.
"""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass
from functools import lru_cache

from meshctl.catalog import RuleOrigin
from meshctl.compile.ports import range_to_prefixes
from meshctl.lazypolicy import CompiledPolicyMap
from meshctl.nodestate import (
    DNS_PROXY_PORT,
    HTTP_PROXY_PORT,
    PROTO_ANY,
    Direction,
    FrozenMap,
    HttpRule,
    PolicyEntry,
    PolicyKey,
    intern_policy_entry,
)


@dataclass(frozen=True)
class Grant:
    """A rule resolved for one endpoint: peers (0 = any) and (protocol, first, last) ranges."""

    origin: RuleOrigin
    direction: Direction
    deny: bool
    identities: tuple[int, ...]
    ports: tuple[tuple[int, int, int], ...] | None  # None = any protocol
    l7: bool = False
    http: tuple[HttpRule, ...] | None = None  # the proxy judges these ports' requests
    dns: tuple[str, ...] | None = None  # the DNS proxy lets through queries for these names


Tup = tuple[int, int, int, int, int]  # (direction, identity, protocol, port, port_prefix)
_prefixes = lru_cache(maxsize=65536)(range_to_prefixes)
# Keys (when made) and values come from nodestate's process-wide intern tables, the ones observe
# decodes into: a compiled map and the observed map of the same content then hold the same
# objects, so the plan compares them at C speed (tuple comparison short-cuts on identity).
_entry = intern_policy_entry


def _covers(a: Tup, b: Tup) -> bool:
    """Same direction and identity assumed: does key a match every packet of key b?"""
    if a[2] == PROTO_ANY:
        return True
    if a[2] != b[2] or a[4] > b[4]:
        return False
    return (a[3] ^ b[3]) >> (16 - a[4]) == 0


# (direction, peer identity or 0, first port, last port, the rule, its HTTP rules): what the
# proxy allows
HttpGrant = tuple[int, int, int, int, RuleOrigin, tuple[HttpRule, ...]]
# (peer identity or 0, first port, last port, the rule, the names): what the DNS proxy lets through
DnsGrant = tuple[int, int, int, RuleOrigin, tuple[str, ...]]
ANY_NAME = ("*",)  # an L4 allow of a DNS port's peer wildcards its DNS rules (the proxy still sees all)


@dataclass(frozen=True)
class MapState:
    """One endpoint's entries (origins: catalog.cookies[entry.cookie]), ineffective L7 pairs and
    the HTTP rules of the ports whose entries send connections to the proxy."""

    entries: FrozenMap[PolicyKey, PolicyEntry]
    ineffective_l7: tuple[tuple[RuleOrigin, RuleOrigin], ...]  # (l7 rule, L4-only rule)
    http: tuple[HttpGrant, ...] = ()
    dns: tuple[DnsGrant, ...] = ()


@lru_cache(maxsize=65536)
def _port_keys(ports: tuple[tuple[int, int, int], ...]) -> tuple[tuple[int, int, int], ...]:
    """(protocol, first, last) ranges -> (protocol, port, port_prefix) LPM blocks, cached."""
    return tuple((proto, port, plen) for proto, first, last in ports for port, plen in _prefixes(first, last))


def _grant_keys(grant: Grant) -> list[Tup]:
    d = int(grant.direction)
    if grant.ports is None:
        return [(d, ident, PROTO_ANY, 0, 0) for ident in grant.identities]
    blocks = _port_keys(grant.ports)
    return [head + block for head in [(d, ident) for ident in grant.identities] for block in blocks]


def build_mapstate(grants: Iterable[Grant], cookies: dict[RuleOrigin, int]) -> MapState:
    """Entries as plain tuples first (cheap to hash and sort), wrapped into PolicyKey at the end."""
    allow: dict[Tup, PolicyEntry] = {}
    deny: dict[Tup, PolicyEntry] = {}
    l7_keys: dict[Tup, RuleOrigin] = {}
    plain_allow: dict[Tup, RuleOrigin] = {}
    ordered = sorted(grants, key=lambda g: g.origin)
    track_l7 = any(g.l7 for g in ordered)
    # The first origin (in sorted order) wins a shared key: walking the grants backwards with
    # plain updates (later writes win) gives exactly that, at C speed.
    for grant in reversed(ordered):
        keys = _grant_keys(grant)
        value = _entry(cookies[grant.origin], grant.deny)
        (deny if grant.deny else allow).update(dict.fromkeys(keys, value))
        if track_l7 and not grant.deny:
            (l7_keys if grant.l7 else plain_allow).update(dict.fromkeys(keys, grant.origin))
    # A deny covering an allow of the same identity would be shadowed by LPM: drop the allow.
    by_ident: dict[tuple[int, int], list[Tup]] = {}
    for key in deny:
        by_ident.setdefault((key[0], key[1]), []).append(key)
    if by_ident:
        for key in [k for k in allow if (k[0], k[1]) in by_ident]:
            for dkey in by_ident[(key[0], key[1])]:
                if _covers(dkey, key):
                    del allow[key]
                    break
    ineffective: set[tuple[RuleOrigin, RuleOrigin]] = set()
    wildcarded: dict[Tup, RuleOrigin] = {}  # an L7 key -> the L4-only rule that wildcards it
    if l7_keys:
        plain_by_ident: dict[tuple[int, int], list[Tup]] = {}
        for key in plain_allow:
            plain_by_ident.setdefault((key[0], key[1]), []).append(key)
        # An L4-only allow of the same peer (or of every peer) and port wildcards L7 (Cilium).
        for key, l7_origin in l7_keys.items():
            for pkey in (*plain_by_ident.get((key[0], key[1]), ()), *plain_by_ident.get((key[0], 0), ())):
                if _covers(pkey, key):
                    wildcarded.setdefault(key, plain_allow[pkey])
                    if plain_allow[pkey] != l7_origin:
                        ineffective.add((l7_origin, plain_allow[pkey]))
    http: list[HttpGrant] = []
    dns: list[DnsGrant] = []
    for grant in ordered:
        if (grant.http is None and grant.dns is None) or grant.deny:
            continue
        for key in _grant_keys(grant):
            if key not in allow:  # a deny shadows it
                continue
            last = key[3] + (1 << (16 - key[4])) - 1
            entry = allow[key]
            if grant.dns is not None:
                # DNS stays with the proxy even when an L4 rule wildcards it: it learns the answers
                allow[key] = _entry(entry.cookie, False, DNS_PROXY_PORT)
                dns.append((key[1], key[3], last, grant.origin, grant.dns))
                if key in wildcarded:
                    dns.append((key[1], key[3], last, wildcarded[key], ANY_NAME))
                continue
            if key in wildcarded:
                continue
            if not entry.proxy_port:
                allow[key] = _entry(entry.cookie, False, HTTP_PROXY_PORT)
            http.append((key[0], key[1], key[3], last, grant.origin, grant.http))
    merged = {**allow, **deny}
    # Tuples sort exactly like PolicyKey (same fields, same order); the keys are made when read.
    order = sorted(merged)
    return MapState(CompiledPolicyMap(order, [merged[t] for t in order]), tuple(sorted(ineffective)),
                    tuple(sorted(set(http))), tuple(sorted(set(dns))))
