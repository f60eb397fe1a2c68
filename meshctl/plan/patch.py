"""apply_changes: a NodeState plus planned changes gives the target NodeState.

The apply engine uses it to compute what each node must look like after a (partial) set of
changes; diff_node's property test checks apply_changes(a, diff(a, b)) == b. Strict by default:
a change whose `before` does not match the state it is applied to is a conflict (PlanError),
the same refusal Terraform makes when reality moved under a plan.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable
from dataclasses import replace
from typing import Any, Generic, TypeVar

from meshctl.errors import PlanError
from meshctl.nodestate import FrozenMap, NodeState, patched
from meshctl.plan import codec
from meshctl.plan.change import Change, ChangeKind
from meshctl.plan.loadbalancer import LbPatch
from meshctl.plan.wireguard import WireguardPatch

K = TypeVar("K")
V = TypeVar("V")


def _check(change: Change, current: Any, strict: bool) -> None:
    if strict and current != change.before:
        raise PlanError(
            f"{change.address}: state does not match the plan (expected {change.before}, found {current})"
        )


def apply_changes(state: NodeState, changes: Iterable[Change], *, strict: bool = True) -> NodeState:
    """The state after `changes` (all for state.node); pure, `state` is left as it is. What no
    change touches is shared with `state`: a node of 1,000 endpoints whose plan changes one
    policy map copies that map, not the other 999."""
    config = state.config
    ipcache = _Edits(state.ipcache)
    endpoints = _Edits(state.endpoints)
    policies = _Edits(state.policies)  # endpoint id -> policy map
    entries_of: dict[int, _Edits[Any, Any]] = {}  # the maps being edited, by endpoint id
    attachments = _SetEdits(state.attachments)
    dropped_maps: set[int] = set()
    wireguard = WireguardPatch(state.encryption)
    lb = LbPatch(state.load_balancer)
    foreign = _SetEdits(state.foreign)
    http = _SetEdits(state.http)
    dns = _SetEdits(state.dns)
    fqdn = state.fqdn

    for ch in changes:
        if ch.node != state.node:
            raise PlanError(f"{ch.address}: change for node {ch.node} applied to node {state.node}")
        if ch.kind is ChangeKind.CONFIG:
            _check(ch, codec.config_value(config), strict)
            config = codec.config_from(ch.after) if ch.after is not None else type(config)()
        elif ch.kind is ChangeKind.IPCACHE:
            prefix = codec.prefix(ch.key)
            cur = ipcache.get(prefix)
            _check(ch, codec.ipcache_value(cur) if cur else None, strict)
            ipcache.put(prefix, codec.ipcache_from(ch.after) if ch.after is not None else None)
        elif ch.kind is ChangeKind.ENDPOINT:
            ip = codec.address(ch.key)
            cur_ep = endpoints.get(ip)
            _check(ch, codec.endpoint_value(cur_ep) if cur_ep else None, strict)
            endpoints.put(ip, codec.endpoint_from(ch.after) if ch.after is not None else None)
        elif ch.kind is ChangeKind.POLICY_MAP:
            eid = int(ch.key)
            _check(ch, {"endpoint_id": eid} if policies.get(eid) is not None else None, strict)
            if ch.after is None:
                policies.put(eid, None)
                entries_of.pop(eid, None)
                dropped_maps.add(eid)
            elif policies.get(eid) is None:
                policies.put(eid, FrozenMap())
        elif ch.kind is ChangeKind.POLICY:
            eid, key = codec.policy_key_from(ch.key)
            if ch.after is None and policies.get(eid) is None and eid in dropped_maps:
                continue  # the whole map went away with its entries
            if ch.after is not None and policies.get(eid) is None:
                policies.put(eid, FrozenMap())
            entries = entries_of.get(eid)
            if entries is None:
                entries = _Edits(policies.get(eid) or FrozenMap())
                if policies.get(eid) is not None:
                    entries_of[eid] = entries
            cur_pe = entries.get(key)
            _check(ch, codec.policy_value(cur_pe) if cur_pe else None, strict)
            entries.put(key, codec.policy_from(ch.after) if ch.after is not None else None)
        elif ch.kind is ChangeKind.ATTACHMENT:
            _swap(attachments.edit(), ch, codec.attachment_from, strict)
        elif ch.kind in (ChangeKind.WIREGUARD, ChangeKind.WIREGUARD_PEER):
            wireguard.apply(ch, strict)
        elif ch.kind in (ChangeKind.LOAD_BALANCER, ChangeKind.LB_BACKEND, ChangeKind.LB_SERVICE):
            lb.apply(ch, strict, _check)
        elif ch.kind is ChangeKind.FOREIGN:
            _swap(foreign.edit(), ch, codec.foreign_from, strict)
        elif ch.kind is ChangeKind.HTTP_RULE:
            _swap(http.edit(), ch, codec.http_from, strict)
        elif ch.kind is ChangeKind.DNS_RULE:
            _swap(dns.edit(), ch, codec.dns_from, strict)
        elif ch.kind is ChangeKind.FQDN:
            _check(ch, codec.fqdn_value(fqdn) if fqdn else None, strict)
            fqdn = codec.fqdn_from(ch.after or {})
    for eid, entries in entries_of.items():
        policies.put(eid, entries.result())
    return replace(
        state,
        config=config,
        ipcache=ipcache.result(),
        endpoints=endpoints.result(),
        policies=policies.result(),
        attachments=attachments.result(),
        encryption=wireguard.result(),
        load_balancer=lb.result(),
        foreign=foreign.result(),
        http=http.result(),
        dns=dns.result(),
        fqdn=fqdn,
    )


class _Edits(Generic[K, V]):
    """Edits of a FrozenMap, kept apart from it: the result patches the map (nodestate.patched),
    and is the map itself when nothing was edited."""

    def __init__(self, base: FrozenMap[K, V]) -> None:
        self.base = base
        self.edits: dict[K, V | None] = {}  # None: the key goes

    def get(self, key: K) -> V | None:
        return self.edits[key] if key in self.edits else self.base.get(key)

    def put(self, key: K, value: V | None) -> None:
        self.edits[key] = value

    def result(self) -> FrozenMap[K, V]:
        return patched(self.base, self.edits)


class _SetEdits(Generic[K]):
    """Edits of a frozenset, copied on the first edit."""

    def __init__(self, base: frozenset[K]) -> None:
        self.base = base
        self.copy: set[K] | None = None

    def edit(self) -> set[K]:
        if self.copy is None:
            self.copy = set(self.base)
        return self.copy

    def result(self) -> frozenset[K]:
        return self.base if self.copy is None else frozenset(self.copy)


def _swap(items: set[Any], ch: Change, decode: Callable[[Any, Any], Any], strict: bool) -> None:
    """A change of a set-like component (attachments, foreign entries, proxy rules): before out,
    after in."""
    if ch.before is not None:
        old = decode(ch.key, ch.before)
        if strict and old not in items:
            raise PlanError(f"{ch.address}: state does not match the plan (no {old})")
        items.discard(old)
    if ch.after is not None:
        items.add(decode(ch.key, ch.after))

