"""diff(observed, intended) of one node: a pure function of two NodeStates and a catalog.

One change per config, ipcache entry, endpoint, policy map, policy entry, attachment and entry in
a form compile never writes (observed only: it is destroyed). The
result, applied to `before` with patch.apply_changes, gives `after` exactly (property-tested).
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from typing import Any

from meshctl.catalog import Catalog
from meshctl.dataplane.foreign import explain
from meshctl.lazypolicy import maps_equal
from meshctl.nodestate import (
    Attachment,
    Direction,
    DnsPolicy,
    EndpointEntry,
    ForeignEntry,
    FqdnTable,
    FrozenMap,
    HttpPolicy,
    NodeState,
    PolicyEntry,
    PolicyKey,
    is_audit_map,
    patched_keys,
)
from meshctl.plan import codec
from meshctl.plan.action import Action
from meshctl.plan.change import Change, ChangeKind, Value
from meshctl.plan.loadbalancer import lb_changes
from meshctl.plan.names import Namer, ports_label
from meshctl.plan.wireguard import wireguard_changes

STAGED_MAP_NEW = "staged policies select the endpoint: its map with them, judged for AUDIT flows"
STAGED_MAP_GONE = "no staged policy selects the endpoint any more"


def _action(before: object, after: object) -> Action:
    if before is None:
        return Action.CREATE
    if after is None:
        return Action.DELETE
    return Action.UPDATE


def _changed_fields(before: Mapping[str, Any] | None, after: Mapping[str, Any] | None) -> str:
    if not before or not after:
        return ""
    keys = [*after, *(k for k in before if k not in after)]
    b, a = ({k: d.get(k, codec.IMPLICIT.get(k)) for k in keys} for d in (before, after))
    return ", ".join(f"{k} {b[k]} -> {a[k]}" for k in keys if b[k] != a[k])


def _keyed(
    before: Mapping[Any, Any], after: Mapping[Any, Any]
) -> Iterable[tuple[Any, Any | None, Any | None]]:
    """(key, before, after) of every key whose value differs, in key order.

    Equal maps (the usual case at scale: a commit touches few objects) cost one C-level
    comparison; otherwise only the changed keys are sorted, not the whole map.
    """
    if before is after:
        return
    keys = patched_keys(before, after)
    if keys is not None:  # an incremental plan's maps: only the patched keys can differ
        for key in sorted(keys):
            b, a = before.get(key), after.get(key)
            if b != a:
                yield key, b, a
        return
    if before == after:
        return
    bd, ad = dict(before.items()), dict(after.items())
    changed = [k for k, v in bd.items() if ad.get(k, _MISSING) != v]
    changed.extend(k for k in ad if k not in bd)
    for key in sorted(changed):
        yield key, bd.get(key), ad.get(key)


_MISSING = object()


class _NodeDiff:
    def __init__(
        self, before: NodeState, after: NodeState, catalog: Catalog, memo: dict[tuple[int, int], bool]
    ) -> None:
        self.before, self.after, self.catalog = before, after, catalog
        self.memo = memo
        self.node = after.node
        self.names = Namer(catalog, self.node, after, before)
        self.changes: list[Change] = []

    def add(
        self,
        kind: ChangeKind,
        key: Any,
        address: str,
        before: Value,
        after: Value,
        reason: str,
        origins: tuple[str, ...] = (),
        action: Action | None = None,
    ) -> None:
        self.changes.append(
            Change(
                node=self.node,
                kind=kind,
                key=key,
                address=f"{self.node} {address}",
                action=action or _action(before, after),
                before=before,
                after=after,
                reason=reason,
                origins=origins,
            )
        )

    def same(self, b_map: Mapping[Any, Any], a_map: Mapping[Any, Any]) -> bool:
        """Equal policy maps, compared once per pair of map objects (maps are shared by the
        endpoints of one identity and across nodes, so few distinct pairs exist).

        Compiled and observed maps hold the same interned keys and values, so == runs at C
        speed; an intended map equal to an observed one takes over the observed map's canonical
        text (formatted for the observed fingerprint anyway), so the intended fingerprint
        formats only the maps that change. An observed map still undecoded (meshctl.lazypolicy:
        the map cache knew its bytes) is compared by canonical-text digest and takes the text of
        the intended map it equals instead."""
        if b_map is a_map:
            return True
        pair = (id(b_map), id(a_map))  # both maps outlive the diff: ids stay unique
        hit = self.memo.get(pair)
        if hit is None:
            hit = self.memo[pair] = maps_equal(b_map, a_map)  # observed lazy maps: by digest
        return hit

    def run(self) -> tuple[Change, ...]:
        self.config()
        self.ipcache()
        self.endpoints()
        self.policies()
        self.attachments()
        self.http()
        self.dns()
        self.fqdn()
        self.changes.extend(wireguard_changes(self.before, self.after))
        self.changes.extend(lb_changes(self.before, self.after))
        self.foreign()
        return tuple(self.changes)

    def config(self) -> None:
        if self.before.config != self.after.config:
            b, a = codec.config_value(self.before.config), codec.config_value(self.after.config)
            self.add(ChangeKind.CONFIG, None, "config", b, a, _config_reason(b, a))

    def ipcache(self) -> None:
        for prefix, b, a in _keyed(self.before.ipcache, self.after.ipcache):
            bv = codec.ipcache_value(b) if b else None
            av = codec.ipcache_value(a) if a else None
            if a is None:
                reason = f"no longer an address of {self.names.peer(b.identity)}"
            elif b is None:
                reason = f"address of {self.names.peer(a.identity)}"
            else:
                reason = f"now {self.names.peer(a.identity)} (was {self.names.peer(b.identity)})"
            self.add(ChangeKind.IPCACHE, str(prefix), f"ipcache {prefix}", bv, av, reason)

    def endpoints(self) -> None:
        for ip, b, a in _keyed(self.before.endpoints, self.after.endpoints):
            bv = codec.endpoint_value(b) if b else None
            av = codec.endpoint_value(a) if a else None
            name = self.names.endpoint_at(ip)
            action = None
            if a is None:
                reason = f"pod at {ip} is no longer on {self.node}"
            elif b is None:
                reason = f"pod {name} is on {self.node} at {ip}"
            elif a.endpoint_id != b.endpoint_id:
                action = Action.REPLACE
                reason = f"endpoint id {b.endpoint_id} -> {a.endpoint_id} forces a new policy map"
            else:
                reason = self._endpoint_reason(name, b, a)
            self.add(ChangeKind.ENDPOINT, str(ip), f"endpoint {name}", bv, av, reason, action=action)

    def _endpoint_reason(self, pod: str, b: EndpointEntry, a: EndpointEntry) -> str:
        why: list[str] = []
        if a.identity != b.identity:
            why.append(f"identity {self.names.peer(b.identity)} -> {self.names.peer(a.identity)}")
        for direction, old, new in (
            (Direction.INGRESS, b.enforce_ingress, a.enforce_ingress),
            (Direction.EGRESS, b.enforce_egress, a.enforce_egress),
        ):
            if old == new:
                continue
            if new:
                by = self.catalog.isolation.get(pod, {}).get(direction, ())
                src = f" by {', '.join(by)}" if by else ""
                why.append(f"{direction.label} default deny{src}")
            else:
                why.append(f"no rule selects it for {direction.label} any more: not enforced")
        for direction in (Direction.INGRESS, Direction.EGRESS):
            if b.audits(direction) != a.audits(direction):
                staged = self.catalog.staged.get(pod, {}).get(direction, ())
                by = f" by {', '.join(staged)}" if staged and a.audits(direction) else ""
                why.append(f"{direction.label} audit{by} " + ("starts" if a.audits(direction) else "stops"))
        return "; ".join(why)

    def policies(self) -> None:
        if self.before.policies is self.after.policies:
            return
        bp, ap = dict(self.before.policies.items()), dict(self.after.policies.items())
        same = self.same
        for eid in sorted(bp.keys() | ap.keys()):
            b_map = bp.get(eid)
            a_map = ap.get(eid)
            if b_map is not None and a_map is not None and same(b_map, a_map):
                continue
            name = self.names.endpoint(eid)
            # Natural order: the map is created before its entries and deleted after them.
            staged = is_audit_map(eid)
            if b_map is None and a_map is not None:
                self.add(ChangeKind.POLICY_MAP, eid, f"policymap {name}", None, {"endpoint_id": eid},
                         STAGED_MAP_NEW if staged else "endpoint gets its policy map")
            for key, b, a in _keyed(b_map or {}, a_map or {}):
                self.policy_entry(eid, name, key, b, a)
            if a_map is None and b_map is not None:
                self.add(ChangeKind.POLICY_MAP, eid, f"policymap {name}", {"endpoint_id": eid}, None,
                         STAGED_MAP_GONE if staged else "endpoint is gone")

    def policy_entry(
        self, eid: int, name: str, key: PolicyKey, b: PolicyEntry | None, a: PolicyEntry | None
    ) -> None:
        shown = a if a is not None else b
        assert shown is not None
        verb = "deny" if shown.deny else "allow"
        peer = self.names.peer(key.identity)
        address = f"policy {name} {key.direction.label} {verb} {peer} {ports_label(key)}"
        origins = tuple(dict.fromkeys(self.catalog.rule_text(e.cookie) for e in (a, b) if e is not None))
        if a is None:
            reason = "no rule produces this entry any more"
        elif b is None:
            reason = f"new {verb} entry" + (" through the node's L7 proxy" if a.proxy_port else "")
        elif b.proxy_port != a.proxy_port and (b.cookie, b.deny) == (a.cookie, a.deny):
            reason = ("the node's L7 proxy now judges these connections' requests" if a.proxy_port
                      else "no longer through the L7 proxy: allowed at L4")
        else:
            reason = _changed_fields(codec.policy_value(b), codec.policy_value(a))
        self.add(
            ChangeKind.POLICY,
            codec.policy_key(eid, key),
            address,
            codec.policy_value(b) if b else None,
            codec.policy_value(a) if a else None,
            reason,
            origins,
        )

    def http(self) -> None:
        """One change per HttpPolicy (an HTTP rule set of one L7 port and peer) that differs."""
        if self.before.http == self.after.http:
            return
        gone, made = self.before.http - self.after.http, self.after.http - self.before.http

        def ident(p: HttpPolicy) -> tuple[Any, ...]:
            return (p.endpoint, p.direction, p.port, p.last_port, p.identity, p.cookie)

        old = {ident(p): p for p in gone}
        new = {ident(p): p for p in made}
        for k in sorted(old.keys() | new.keys()):
            b, a = old.get(k), new.get(k)
            shown = a or b
            assert shown is not None
            pod, peer = self.names.endpoint_at(shown.endpoint), self.names.peer(shown.identity)
            address = (f"http {pod}:{shown.ports} ingress from {peer}" if shown.direction == Direction.INGRESS
                       else f"http {pod} egress to {peer}:{shown.ports}")
            rules = "; ".join(r.text for r in shown.rules) or "every request"
            reason = ("the proxy allows " if a else "the proxy no longer allows ") + rules
            self.add(ChangeKind.HTTP_RULE, codec.http_key(shown), address,
                     codec.http_value(b) if b else None, codec.http_value(a) if a else None,
                     reason, (self.catalog.rule_text(shown.cookie),))

    def dns(self) -> None:
        """One change per DnsPolicy (the names one endpoint may ask one peer for) that differs."""
        if self.before.dns == self.after.dns:
            return

        def ident(p: DnsPolicy) -> tuple[Any, ...]:
            return (p.endpoint, p.port, p.last_port, p.identity, p.cookie)

        old = {ident(p): p for p in self.before.dns - self.after.dns}
        new = {ident(p): p for p in self.after.dns - self.before.dns}
        for k in sorted(old.keys() | new.keys()):
            b, a = old.get(k), new.get(k)
            shown = a or b
            assert shown is not None
            pod, peer = self.names.endpoint_at(shown.endpoint), self.names.peer(shown.identity)
            names = ", ".join(shown.names)
            verb = "lets through queries for " if a else "no longer lets through "
            reason = f"the DNS proxy {verb}{names}"
            self.add(ChangeKind.DNS_RULE, codec.dns_key(shown), f"dns {pod} egress to {peer}:{shown.ports}",
                     codec.dns_value(b) if b else None, codec.dns_value(a) if a else None,
                     reason, (self.catalog.rule_text(shown.cookie),))

    def fqdn(self) -> None:
        """The node's toFQDNs selectors (and the DNS proxy's settings), one change: the DNS proxy
        learns IPs for these names."""
        if self.before.fqdn == self.after.fqdn:
            return
        b, a = fqdn_value(self.before.fqdn), fqdn_value(self.after.fqdn)

        before, after = (set(FqdnTable.of(s.fqdn).selectors) for s in (self.before, self.after))
        added, gone = sorted(after - before), sorted(before - after)
        settings = [f"{key} {b.get(key, default)} -> {a.get(key, default)}"
                    for key, default in (("minTTL", 0), ("rejectResponseCode", "refused"))
                    if b.get(key, default) != a.get(key, default)]
        reason = "; ".join(part for part in (
            f"learns IPs for {', '.join(added)}" if added else "",
            f"no longer learns IPs for {', '.join(gone)}" if gone else "",
            f"meshctl.toml [dns] {', '.join(settings)}" if settings else "") if part) or "identities move"
        self.add(ChangeKind.FQDN, None, "fqdn selectors", b or None, a or None, reason)

    def attachments(self) -> None:
        def group(atts: frozenset[Attachment]) -> dict[tuple[Any, str], list[Attachment]]:
            out: dict[tuple[Any, str], list[Attachment]] = {}
            for att in sorted(atts):
                out.setdefault((att.endpoint, att.hook), []).append(att)
            return out

        # only what differs is sorted and grouped: 10,000 pods have 20,000 attachments
        if self.before.attachments is self.after.attachments:
            return
        gone = group(self.before.attachments - self.after.attachments)
        made = group(self.after.attachments - self.before.attachments)
        for slot in sorted(set(gone) | set(made)):
            olds, news = gone.get(slot, []), made.get(slot, [])
            name = f"attachment {self.names.endpoint_at(slot[0])} {slot[1]}"
            if len(olds) == 1 and len(news) == 1:
                old, new = olds[0], news[0]
                self.add(
                    ChangeKind.ATTACHMENT,
                    codec.attachment_key(new),
                    name,
                    codec.attachment_value(old),
                    codec.attachment_value(new),
                    f"datapath build {_short(old.build)} -> {_short(new.build)}",
                )
                continue
            for old in olds:
                self.add(ChangeKind.ATTACHMENT, codec.attachment_key(old), name,
                         codec.attachment_value(old), None, "no endpoint needs this program")
            for new in news:
                self.add(ChangeKind.ATTACHMENT, codec.attachment_key(new), name,
                         None, codec.attachment_value(new), f"attach datapath build {_short(new.build)}")


    def foreign(self) -> None:
        """Entries in forms compile never writes: observed only, so destroyed (a compiled state
        holding one would be created, for the patch's symmetry)."""
        for entry in sorted(self.before.foreign ^ self.after.foreign):
            value = codec.foreign_value(entry)
            observed = entry in self.before.foreign
            before, after = (value, None) if observed else (None, value)
            self.add(ChangeKind.FOREIGN, codec.foreign_key(entry), self.foreign_address(entry),
                     before, after, explain(entry, self.names.peer))

    def foreign_address(self, entry: ForeignEntry) -> str:
        where = f"policymap {self.names.endpoint(entry.owner)}" if entry.map == "policy" else entry.map
        return f"hand-made {where} entry {entry.key}"


def _short(build: str) -> str:
    return build.removeprefix("sha256:")[:12]


def diff_node(
    before: NodeState,
    after: NodeState,
    catalog: Catalog | None = None,
    memo: dict[tuple[int, int], bool] | None = None,
) -> tuple[Change, ...]:
    """Every change that turns `before` (observed) into `after` (intended), in display order.

    `memo` remembers policy map comparisons across the nodes of one plan (the caller keeps
    every compared map alive while it holds the memo)."""
    if before.node != after.node:
        raise ValueError(f"diff of different nodes: {before.node} vs {after.node}")
    return _NodeDiff(before, after, catalog or Catalog(), {} if memo is None else memo).run()


def change_counts(changes: Iterable[Change]) -> dict[Action, int]:
    counts = dict.fromkeys(Action, 0)
    for change in changes:
        counts[change.action] += 1
    return counts



# DatapathConfig field -> the meshctl.toml setting it comes from and how it reads there
_CONFIG_SOURCE = {
    "ipv6_pass": ("meshctl.toml [datapath] ipv6", {True: '"pass"', False: '"drop"'}),
    "proxy": ("L7 ports on the node (the datapath looks up the proxy's sockets)", {True: "yes", False: "no"}),
}


def fqdn_value(fqdn: FrozenMap[str, int]) -> dict[str, Any]:
    return codec.fqdn_value(fqdn) if fqdn else {}


def _config_reason(b: dict[str, Any], a: dict[str, Any]) -> str:
    """Which settings moved, in meshctl.toml's words: 'meshctl.toml [datapath] ipv6 "drop" -> "pass"';
    a setting meshctl.toml does not hold (a conntrack timeout) is named by its field."""
    moved = []
    for key in sorted({*b, *a}):
        old, new = (d.get(key, codec.IMPLICIT.get(key)) for d in (b, a))
        if old != new:
            name, words = _CONFIG_SOURCE.get(key, (f"datapath setting {key}", {}))
            moved.append(f"{name} {words.get(old, old)} -> {words.get(new, new)}")
    return "; ".join(moved) or "datapath settings changed"
