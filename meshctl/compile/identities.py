"""Stable numeric identities and endpoint ids: immutable tables persisted in the state dir.

A label set keeps its number for the life of a lineage, and a number once given is never
reused, so restarting or scaling pods never changes policy entries, only ipcache entries.
"""

from __future__ import annotations

import hashlib
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field
from ipaddress import IPv4Network
from typing import Any

from meshctl.errors import CompileError, StateError
from meshctl.nodestate import CIDR_IDENTITY_MIN, CLUSTER_IDENTITY_MIN, ReservedIdentity

LabelSet = tuple[str, ...]

RESERVED_LABELS: dict[int, LabelSet] = {
    ReservedIdentity.HOST: ("reserved:host",),
    ReservedIdentity.WORLD: ("reserved:world",),
    ReservedIdentity.UNMANAGED: ("reserved:unmanaged",),
    ReservedIdentity.HEALTH: ("reserved:health",),
    ReservedIdentity.INIT: ("reserved:init",),
    ReservedIdentity.REMOTE_NODE: ("reserved:remote-node",),
    ReservedIdentity.KUBE_APISERVER: ("reserved:kube-apiserver",),
    ReservedIdentity.INGRESS: ("reserved:ingress",),
}
CLUSTER_IDENTITY_MAX = CIDR_IDENTITY_MIN - 1
ENDPOINT_ID_MAX = 65535


@dataclass(frozen=True)
class IdentityTable:
    """label set -> identity (>= 256); `next_id` only grows, so numbers are never reused."""

    by_labels: Mapping[LabelSet, int] = field(default_factory=dict)
    next_id: int = CLUSTER_IDENTITY_MIN

    def allocate(self, label_sets: Iterable[LabelSet]) -> IdentityTable:
        """Keep existing numbers; give new sets (in sorted order) the next free numbers."""
        new = sorted({tuple(ls) for ls in label_sets} - set(self.by_labels))
        if not new:
            return self
        table = dict(self.by_labels)
        nxt = self.next_id
        for ls in new:
            if nxt > CLUSTER_IDENTITY_MAX:
                raise CompileError("cluster identity space exhausted (more than 16M label sets)")
            table[ls] = nxt
            nxt += 1
        return IdentityTable(table, nxt)

    def get(self, labels: LabelSet) -> int | None:
        return self.by_labels.get(labels)

    def as_dict(self) -> dict[str, Any]:
        """The JSON body (the state keeps it as a value: no text round trip per plan)."""
        return {
            "next_id": self.next_id,
            "identities": [
                {"id": i, "labels": list(ls)} for ls, i in sorted(self.by_labels.items(), key=lambda x: x[1])
            ],
        }

    @classmethod
    def from_dict(cls, body: Any) -> IdentityTable:
        try:
            table = {tuple(e["labels"]): int(e["id"]) for e in body["identities"]}
            nxt = int(body["next_id"])
        except (ValueError, KeyError, TypeError) as err:
            raise StateError(f"identity table is corrupt: {err}") from err
        if table and max(table.values()) >= nxt:
            raise StateError("identity table is corrupt: next_id is not above every identity")
        return cls(table, nxt)


@dataclass(frozen=True)
class EndpointTable:
    """Per node, "ns/pod" -> endpoint id (1..65535); ids of removed pods are not reused."""

    by_pod: Mapping[str, Mapping[str, int]] = field(default_factory=dict)  # node -> pod -> id
    next_id: Mapping[str, int] = field(default_factory=dict)  # node -> next free id

    def allocate(self, node: str, pods: Iterable[str]) -> EndpointTable:
        current = self.by_pod.get(node, {})
        new = sorted(set(pods) - set(current))
        if not new:
            return self
        nxt = self.next_id.get(node, 1)
        table = dict(current)
        for pod in new:
            if nxt > ENDPOINT_ID_MAX:
                raise CompileError(f"node {node}: endpoint id space exhausted (65535)")
            table[pod] = nxt
            nxt += 1
        by_pod = dict(self.by_pod)
        by_pod[node] = table
        next_id = dict(self.next_id)
        next_id[node] = nxt
        return EndpointTable(by_pod, next_id)

    def get(self, node: str, pod: str) -> int | None:
        return self.by_pod.get(node, {}).get(pod)

    def as_dict(self) -> dict[str, Any]:
        """The JSON body (the state keeps it as a value: no text round trip per plan); key order
        is left to the writer (sort_keys)."""
        return {node: {"next_id": self.next_id.get(node, 1), "endpoints": dict(pods)}
                for node, pods in self.by_pod.items()}

    @classmethod
    def from_dict(cls, body: Any) -> EndpointTable:
        try:
            by_pod = {n: {p: int(i) for p, i in v["endpoints"].items()} for n, v in body.items()}
            nxt = {n: int(v["next_id"]) for n, v in body.items()}
        except (ValueError, KeyError, TypeError, AttributeError) as err:
            raise StateError(f"endpoint table is corrupt: {err}") from err
        return cls(by_pod, nxt)


def _derived(key: str, used: set[int]) -> int:
    """A node-local identity (>= 1<<24) hashed from `key`, probing past the `used` ones."""
    span = (1 << 32) - CIDR_IDENTITY_MIN
    h = int.from_bytes(hashlib.sha256(key.encode()).digest()[:4], "big") % span
    while CIDR_IDENTITY_MIN + h in used:
        h = (h + 1) % span
    used.add(CIDR_IDENTITY_MIN + h)
    return CIDR_IDENTITY_MIN + h


def fqdn_cidr_identities(pairs: Iterable[tuple[str, IPv4Network]], taken: Iterable[int]
                         ) -> dict[tuple[str, IPv4Network], int]:
    """The identities of IPs a toFQDNs selector (or set) learns inside a CIDR prefix of the
    cluster: derived like CIDR identities (from "selector@prefix"), never one of `taken`."""
    used = set(taken)
    return {pair: _derived(f"{pair[0]}@{pair[1]}", used) for pair in sorted(set(pairs), key=str)}


def cidr_identities(prefixes: Iterable[IPv4Network]) -> dict[IPv4Network, int]:
    """Node-local CIDR identities (>= 1<<24), derived from each prefix by hash.

    The same prefix gets the same number on every node and run; the rare hash collision is
    resolved by probing in sorted prefix order. 0.0.0.0/0 is world (the ipcache miss).
    """
    out: dict[IPv4Network, int] = {}
    used: set[int] = set()
    for prefix in sorted(set(prefixes)):
        out[prefix] = ReservedIdentity.WORLD if prefix.prefixlen == 0 else _derived(str(prefix), used)
    return out
