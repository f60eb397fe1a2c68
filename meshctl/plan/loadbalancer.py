"""Plan changes of a node's load balancer, their inverse for patch.apply_changes, and warnings.

Three kinds: `<node> loadbalancer` (on/off, underlay device, SNAT address, the settings mode /
algorithm / table size / seed), `<node> backend 10.101.2.7:3000/TCP` and `<node> service demo/api
10.96.0.10:80/TCP`. Order is make-before-break: the settings, backends added or changed, then
services, then backends removed, so no service slot ever names a missing backend. A change of
the settings is a replace (-/+) and warns: apply flushes the node's flow and affinity state
(dataplane.lb_maps.write), so every flow follows the new settings and established connections
through services move or break.
"""

from __future__ import annotations

from collections.abc import Callable, Iterator, Mapping
from dataclasses import replace
from ipaddress import IPv4Address
from typing import Any

from meshctl.nodestate import (
    NO_LOAD_BALANCER,
    PROTOCOL_NAMES,
    FrozenMap,
    LbBackendEntry,
    LbFrontend,
    LbService,
    LoadBalancerState,
    NodeState,
    _pack_ids,
    _unpack_ids,
)
from meshctl.plan.action import Action
from meshctl.plan.change import Change, ChangeKind
from meshctl.plan.model import PlanWarning
from meshctl.plan.slots import selection_summary

# LbFrontend.__str__'s protocol names (a protocol without a name is printed as its number)
PROTO_BY_NAME = {name.upper(): number for number, name in PROTOCOL_NAMES.items()}
FLUSH_REASON = ("apply flushes the node's load-balancer flow and affinity state (lb_flows, lb_affinity) "
                "so every flow follows the new settings: established connections through services "
                "move to another backend or break")


def _settings_delta(old: str, new: str) -> str:
    """Only the settings that differ: "mode=snat -> mode=dsr"."""
    o, n = old.split(), new.split()
    if len(o) != len(n):
        return f"{old} -> {new}"
    pairs = [(a, b) for a, b in zip(o, n, strict=True) if a != b]
    return ", ".join(f"{a} -> {b}" for a, b in pairs) or f"{old} -> {new}"


def head_value(lb: LoadBalancerState) -> dict[str, Any] | None:
    if replace(lb, services=FrozenMap(), backends=FrozenMap()) == NO_LOAD_BALANCER:
        return None
    return {"enabled": lb.enabled, "interface": lb.interface,
            "snat_address": str(lb.snat_address) if lb.snat_address else "", "settings": lb.settings}


def backend_value(b: LbBackendEntry) -> dict[str, Any]:
    return {"address": str(b.address), "port": b.port, "protocol": b.protocol, "local": b.local}


def backend_from(v: dict[str, Any]) -> LbBackendEntry:
    return LbBackendEntry(IPv4Address(v["address"]), int(v["port"]), int(v["protocol"]), bool(v["local"]))


def service_value(s: LbService) -> dict[str, Any]:
    return {"service_id": s.service_id, "name": s.name, "backends": list(s.backends),
            "maglev_size": len(s.maglev), "maglev": _pack_ids(s.maglev),
            "affinity_timeout_s": s.affinity_timeout_s, "external": s.external, "dsr": s.dsr}


def service_from(v: dict[str, Any]) -> LbService:
    return LbService(int(v["service_id"]), tuple(int(b) for b in v["backends"]), _unpack_ids(v["maglev"]),
                     int(v["affinity_timeout_s"]), bool(v["external"]), bool(v["dsr"]), v.get("name", ""))


def frontend_from(key: str) -> LbFrontend:
    addr, _, rest = key.partition(":")
    port, _, proto = rest.partition("/")
    number = PROTO_BY_NAME[proto] if proto in PROTO_BY_NAME else int(proto)
    return LbFrontend(IPv4Address(addr), int(port), number)


def _change(node: str, kind: ChangeKind, key: Any, address: str, before: Any, after: Any, reason: str,
            action: Action | None = None) -> Change:
    if action is None:
        action = Action.CREATE if before is None else Action.DELETE if after is None else Action.UPDATE
    return Change(node=node, kind=kind, key=key, address=f"{node} {address}", action=action, before=before,
                  after=after, reason=reason)


def _service_reason(b: LbService | None, a: LbService | None, label: Callable[[int], str]) -> str:
    """Why a frontend changes; a change of its backend selection says which share moves where
    (plan/slots.py) instead of showing tables."""
    sel_b = (b.backends, b.maglev) if b else None
    sel_a = (a.backends, a.maglev) if a else None
    if a is None:
        return f"no service has this frontend any more (was {selection_summary(sel_b, None, label)})"
    if b is None:
        return f"new frontend with {len(a.backends)} backend(s): {selection_summary(None, sel_a, label)}"
    why = []
    if set(a.backends) != set(b.backends):
        added, removed = len(set(a.backends) - set(b.backends)), len(set(b.backends) - set(a.backends))
        why.append(f"backends +{added} -{removed}")
    if a.affinity_timeout_s != b.affinity_timeout_s:
        why.append(f"sessionAffinity timeout {b.affinity_timeout_s}s -> {a.affinity_timeout_s}s")
    if a.external != b.external:
        why.append(f"external {str(b.external).lower()} -> {str(a.external).lower()}")
    if a.dsr != b.dsr:
        why.append(f"dsr {str(b.dsr).lower()} -> {str(a.dsr).lower()}")
    if a.service_id != b.service_id:
        why.append(f"service id {b.service_id} -> {a.service_id}")
    if sel_a != sel_b:
        why.append(selection_summary(sel_b, sel_a, label))
    return "; ".join(why) or "updated"


def _labeller(b: LoadBalancerState, a: LoadBalancerState) -> Callable[[int], str]:
    """Backend id -> its address (after the change if it still exists, else before)."""
    def label(i: int) -> str:
        entry = a.backends.get(i) or b.backends.get(i)
        return str(entry) if entry else f"backend #{i}"
    return label


def lb_changes(before: NodeState, after: NodeState) -> Iterator[Change]:
    node = after.node
    b, a = before.load_balancer, after.load_balancer
    if b == a:
        return
    hb, ha = head_value(b), head_value(a)
    if hb != ha:
        if hb and ha and hb["settings"] and ha["settings"] != hb["settings"]:
            yield _change(node, ChangeKind.LOAD_BALANCER, "loadbalancer", "loadbalancer", hb, ha,
                          f"settings {_settings_delta(hb['settings'], ha['settings'])}: {FLUSH_REASON}",
                          Action.REPLACE)
        else:
            if ha and ha["enabled"] and not (hb and hb["enabled"]):
                why = "kube-proxy replacement on"
            elif ha and not ha["enabled"] and ha["interface"] and not (hb and hb["interface"]):
                why = (f"the netdev programs on {ha['interface']}: connections from other nodes to "
                       "L7 ports reach the node's proxy")
            elif hb and not hb["enabled"] and hb["interface"] and not (ha and ha["interface"]):
                why = "no L7 port on the node any more: the netdev programs go"
            elif not ha or not ha["enabled"]:
                why = "kube-proxy replacement off"
            else:
                why = "node address or device changed"
            yield _change(node, ChangeKind.LOAD_BALANCER, "loadbalancer", "loadbalancer", hb, ha, why)
    gone_backends = []
    backend_name = _labeller(b, a)
    for i in sorted(set(b.backends) | set(a.backends)):
        ob, nb = b.backends.get(i), a.backends.get(i)
        if ob == nb:
            continue
        if nb is None:
            gone_backends.append(i)
            continue
        yield _change(node, ChangeKind.LB_BACKEND, i, f"backend {nb}", backend_value(ob) if ob else None,
                      backend_value(nb), "new backend" if ob is None else "backend changed")
    for f in sorted(set(b.services) | set(a.services)):
        os_, ns = b.services.get(f), a.services.get(f)
        if os_ == ns:
            continue
        name = (ns or os_).name if (ns or os_) else ""  # type: ignore[union-attr]
        label = f"service {name} {f}" if name else f"service {f}"
        before_v = service_value(replace(os_, name=ns.name if ns else os_.name)) if os_ else None
        yield _change(node, ChangeKind.LB_SERVICE, str(f), label, before_v,
                      service_value(ns) if ns else None, _service_reason(os_, ns, backend_name))
    for i in gone_backends:
        ob = b.backends[i]
        yield _change(node, ChangeKind.LB_BACKEND, i, f"backend {ob}", backend_value(ob), None,
                      "no service selects it any more (removed after the services stop naming it)")


class LbPatch:
    """Accumulates load-balancer changes onto a LoadBalancerState (patch.apply_changes)."""

    def __init__(self, state: LoadBalancerState) -> None:
        self.head = replace(state, services=FrozenMap(), backends=FrozenMap())
        self.services: dict[LbFrontend, LbService] = dict(state.services)
        self.backends: dict[int, LbBackendEntry] = dict(state.backends)

    def apply(self, ch: Change, strict: bool, check: Any) -> None:
        if ch.kind is ChangeKind.LOAD_BALANCER:
            check(ch, head_value(self.head), strict)
            v = ch.after
            self.head = NO_LOAD_BALANCER if v is None else LoadBalancerState(
                enabled=bool(v["enabled"]), interface=v["interface"],
                snat_address=IPv4Address(v["snat_address"]) if v["snat_address"] else None,
                settings=v["settings"])
        elif ch.kind is ChangeKind.LB_BACKEND:
            i = int(ch.key)
            cur = self.backends.get(i)
            check(ch, backend_value(cur) if cur else None, strict)
            _put(self.backends, i, backend_from(ch.after) if ch.after is not None else None)
        elif ch.kind is ChangeKind.LB_SERVICE:
            f = frontend_from(ch.key)
            cur_s = self.services.get(f)
            name = (ch.before or {}).get("name", "")  # for people only: never a mismatch
            check(ch, service_value(replace(cur_s, name=name)) if cur_s else None, strict)
            _put(self.services, f, service_from(ch.after) if ch.after is not None else None)

    def result(self) -> LoadBalancerState:
        return replace(self.head, services=FrozenMap(self.services), backends=FrozenMap(self.backends))


def _put(d: dict[Any, Any], key: Any, value: Any) -> None:
    if value is None:
        d.pop(key, None)
    else:
        d[key] = value


def lb_warnings(observed: Mapping[str, NodeState], intended: Mapping[str, NodeState]) -> list[PlanWarning]:
    """A change of mode, algorithm, table size or seed on a node that already balances."""
    out = []
    for name, after in sorted(intended.items()):
        before = observed.get(name)
        if before is None:
            continue
        old, new = before.load_balancer.settings, after.load_balancer.settings
        if old and new and old != new:
            out.append(PlanWarning(
                f"{name}: load-balancer settings change ({_settings_delta(old, new)})",
                "Backends are re-selected with the new mode/algorithm/table/seed: apply flushes the node's "
                "load-balancer flow and affinity state, so established connections through services move "
                "to another backend or break. Apply in a quiet window.",
                node=name))
    return out
