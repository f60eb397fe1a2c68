"""Per-component digests of the state a node plan was made from, so a stale plan can say WHAT moved.

The plan's observed fingerprint says only THAT a node changed. Each node of the plan file also
records, per component of its canonical state, the entry count and a short sha256 of that
component's canonical text (config, ipcache, endpoints, attachments, encryption, load balancer,
and every endpoint's policy map). Policy maps are grouped by digest (endpoints of one identity
share a map), so the record stays small at 10,000 pods. Digests are truncated to 64 bits: they
explain a staleness that the full fingerprint already detected, they never decide it.
"""

from __future__ import annotations

import hashlib
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from typing import Any

from meshctl.nodestate import FrozenMap, NodeState, policy_map_sha

DIGEST_HEX = 16
# Components of NodeState.canonical_parts() with their own digest, in report order; "policies"
# is recorded per endpoint instead, "node" never changes.
COMPONENTS = ("config", "ipcache", "endpoints", "attachments", "encryption", "load_balancer", "http", "dns",
              "fqdn")
LABELS = {"load_balancer": "load balancer", "http": "HTTP proxy rules", "dns": "DNS proxy rules",
          "fqdn": "toFQDNs selectors"}

_DIGESTS: dict[str, str] = {}  # canonical text -> digest (str hashes are cached on the object)
_DIGEST_LIMIT = 65536


def digest(text: str) -> str:
    hit = _DIGESTS.get(text)
    if hit is None:
        if len(_DIGESTS) >= _DIGEST_LIMIT:
            _DIGESTS.clear()
        hit = _DIGESTS[text] = hashlib.sha256(text.encode()).hexdigest()[:DIGEST_HEX]
    return hit


@dataclass(frozen=True)
class Digest:
    """One component: how many entries it has and the digest of its canonical text."""

    entries: int
    sha: str

    def to_json(self) -> list[Any]:
        return [self.entries, self.sha]

    @classmethod
    def from_json(cls, d: list[Any]) -> Digest:
        return cls(int(d[0]), str(d[1]))


@dataclass(frozen=True)
class NodeDigests:
    """components: name -> Digest (absent components count 0 entries); policies: endpoint id ->
    Digest of its policy map."""

    components: FrozenMap[str, Digest]
    policies: FrozenMap[int, Digest]

    @classmethod
    def of(cls, state: NodeState, parts: Mapping[str, str] | None = None) -> NodeDigests:
        """`parts`: state.canonical_parts() when the caller has them already."""
        if parts is None:
            parts = state.canonical_parts()
        counts = {
            "config": 1,
            "ipcache": len(state.ipcache),
            "endpoints": len(state.endpoints),
            "attachments": len(state.attachments),
            "encryption": len(state.encryption.peers),
            "load_balancer": len(state.load_balancer.services),
            "http": len(state.http),
            "dns": len(state.dns),
            "fqdn": len(state.fqdn),
        }
        components = {c: Digest(counts[c] if c in parts else 0, digest(parts.get(c, ""))) for c in COMPONENTS}
        by_map: dict[int, Digest] = {}  # id(map) -> Digest: maps are shared by many endpoints
        policies = {}
        for ep, entries in state.policies.items():
            d = by_map.get(id(entries))
            if d is None:
                d = by_map[id(entries)] = Digest(len(entries), policy_map_sha(entries)[:DIGEST_HEX])
            policies[ep] = d
        return cls(FrozenMap(components), FrozenMap.from_sorted(policies.items()))

    def to_json(self) -> dict[str, Any]:
        """{"config": [1, sha], ..., "policies": {sha: "entries:endpoint ids"}} ("12:21-23,40"):
        one JSON string per distinct map keeps the pretty-printed plan file short."""
        groups: dict[str, tuple[int, list[int]]] = {}
        for ep, d in self.policies.items():
            groups.setdefault(d.sha, (d.entries, []))[1].append(ep)
        return {
            **{c: d.to_json() for c, d in self.components.items()},
            "policies": {sha: f"{n}:{pack_ids(eps)}" for sha, (n, eps) in groups.items()},
        }

    @classmethod
    def from_json(cls, d: Mapping[str, Any]) -> NodeDigests:
        policies = {}
        for sha, group in d["policies"].items():
            n, _, eps = str(group).partition(":")
            policies.update(dict.fromkeys(unpack_ids(eps), Digest(int(n), str(sha))))
        return cls(
            # a component a plan file does not list (written before it existed) is absent there
            FrozenMap({c: Digest.from_json(d[c]) if c in d else Digest(0, digest("")) for c in COMPONENTS}),
            FrozenMap(policies),
        )


def pack_ids(ids: list[int]) -> str:
    """Sorted endpoint ids as one short string, runs as ranges: [1, 2, 3, 7] -> "1-3,7"."""
    out: list[str] = []
    i = 0
    while i < len(ids):
        j = i
        while j + 1 < len(ids) and ids[j + 1] == ids[j] + 1:
            j += 1
        out.append(str(ids[i]) if i == j else f"{ids[i]}-{ids[j]}")
        i = j + 1
    return ",".join(out)


def unpack_ids(text: str) -> list[int]:
    ids: list[int] = []
    for part in filter(None, str(text).split(",")):
        first, _, last = part.partition("-")
        ids.extend(range(int(first), int(last or first) + 1))
    return ids


@dataclass(frozen=True)
class Moved:
    """One component that differs between the plan's digests and the live state.

    component: a COMPONENTS name or "policies"; endpoint_id set for one policy map."""

    component: str
    before: int
    after: int
    endpoint_id: int | None = None

    def describe(self, endpoint_name: Callable[[int], str]) -> str:
        if self.endpoint_id is not None:
            what = f"policy map of {endpoint_name(self.endpoint_id)}"
            if self.before < 0:
                return f"{what} appeared ({self.after} entries)"
            if self.after < 0:
                return f"{what} went missing (had {self.before} entries)"
        else:
            what = LABELS.get(self.component, self.component)
            if self.component == "config":
                return f"{what} changed"
        counts = f" ({self.before} -> {self.after} entries)" if self.before != self.after else ""
        return f"{what} changed{counts}"


def moved(planned: NodeDigests, live: NodeDigests) -> list[Moved]:
    """What differs, components first, then policy maps by endpoint id (-1 entries = no map)."""
    out = [
        Moved(c, d.entries, live.components[c].entries)
        for c, d in planned.components.items()
        if live.components[c] != d
    ]
    out.sort(key=lambda m: COMPONENTS.index(m.component))
    for ep in sorted(planned.policies.keys() | live.policies.keys()):
        b, a = planned.policies.get(ep), live.policies.get(ep)
        if b != a:
            out.append(Moved("policies", b.entries if b else -1, a.entries if a else -1, ep))
    return out
