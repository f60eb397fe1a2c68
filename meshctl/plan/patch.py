"""apply_changes: a NodeState plus planned changes gives the target NodeState.

The apply engine uses it to compute what each node must look like after a (partial) set of
changes; diff_node's property test checks apply_changes(a, diff(a, b)) == b. Strict by default:
a change whose `before` does not match the state it is applied to is a conflict (PlanError),
the same refusal Terraform makes when reality moved under a plan.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable
from dataclasses import replace
from typing import Any

from meshctl.errors import PlanError
from meshctl.nodestate import Attachment, FrozenMap, NodeState
from meshctl.plan import codec
from meshctl.plan.change import Change, ChangeKind
from meshctl.plan.loadbalancer import LbPatch
from meshctl.plan.wireguard import WireguardPatch


def _check(change: Change, current: Any, strict: bool) -> None:
    if strict and current != change.before:
        raise PlanError(
            f"{change.address}: state does not match the plan (expected {change.before}, found {current})"
        )


def apply_changes(state: NodeState, changes: Iterable[Change], *, strict: bool = True) -> NodeState:
    """The state after `changes` (all for state.node); pure, `state` is left as it is."""
    config = state.config
    ipcache = dict(state.ipcache)
    endpoints = dict(state.endpoints)
    policies = {eid: dict(m) for eid, m in state.policies.items()}
    attachments: set[Attachment] = set(state.attachments)
    dropped_maps: set[int] = set()
    wireguard = WireguardPatch(state.encryption)
    lb = LbPatch(state.load_balancer)
    foreign = set(state.foreign)

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
            _put(ipcache, prefix, codec.ipcache_from(ch.after) if ch.after is not None else None)
        elif ch.kind is ChangeKind.ENDPOINT:
            ip = codec.address(ch.key)
            cur_ep = endpoints.get(ip)
            _check(ch, codec.endpoint_value(cur_ep) if cur_ep else None, strict)
            _put(endpoints, ip, codec.endpoint_from(ch.after) if ch.after is not None else None)
        elif ch.kind is ChangeKind.POLICY_MAP:
            eid = int(ch.key)
            _check(ch, {"endpoint_id": eid} if eid in policies else None, strict)
            if ch.after is None:
                policies.pop(eid, None)
                dropped_maps.add(eid)
            else:
                policies.setdefault(eid, {})
        elif ch.kind is ChangeKind.POLICY:
            eid, key = codec.policy_key_from(ch.key)
            if ch.after is None and eid not in policies and eid in dropped_maps:
                continue  # the whole map went away with its entries
            entries = policies.setdefault(eid, {}) if ch.after is not None else policies.get(eid, {})
            cur_pe = entries.get(key)
            _check(ch, codec.policy_value(cur_pe) if cur_pe else None, strict)
            _put(entries, key, codec.policy_from(ch.after) if ch.after is not None else None)
        elif ch.kind is ChangeKind.ATTACHMENT:
            _swap(attachments, ch, codec.attachment_from, strict)
        elif ch.kind in (ChangeKind.WIREGUARD, ChangeKind.WIREGUARD_PEER):
            wireguard.apply(ch, strict)
        elif ch.kind in (ChangeKind.LOAD_BALANCER, ChangeKind.LB_BACKEND, ChangeKind.LB_SERVICE):
            lb.apply(ch, strict, _check)
        elif ch.kind is ChangeKind.FOREIGN:
            _swap(foreign, ch, codec.foreign_from, strict)
    return replace(
        state,
        config=config,
        ipcache=FrozenMap(ipcache),
        endpoints=FrozenMap(endpoints),
        policies=FrozenMap({eid: FrozenMap(m) for eid, m in policies.items()}),
        attachments=frozenset(attachments),
        encryption=wireguard.result(),
        load_balancer=lb.result(),
        foreign=frozenset(foreign),
    )


def _swap(items: set[Any], ch: Change, decode: Callable[[Any, Any], Any], strict: bool) -> None:
    """A change of a set-like component (attachments, foreign entries): before out, after in."""
    if ch.before is not None:
        old = decode(ch.key, ch.before)
        if strict and old not in items:
            raise PlanError(f"{ch.address}: state does not match the plan (no {old})")
        items.discard(old)
    if ch.after is not None:
        items.add(decode(ch.key, ch.after))


def _put(d: dict[Any, Any], key: Any, value: Any) -> None:
    if value is None:
        d.pop(key, None)
    else:
        d[key] = value
