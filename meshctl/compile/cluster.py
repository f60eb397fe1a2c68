"""compile_cluster: desired state -> one NodeState per node plus the Catalog that explains it.

Pure and deterministic: identities and selectors are resolved once for the cluster, every
endpoint's policy map is built once per (identity, container ports, node) and shared.
"""

from __future__ import annotations

import bisect
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field
from ipaddress import IPv4Address, IPv4Network
from typing import Any, TypeVar

from meshctl.catalog import Catalog, IdentityInfo, RuleOrigin
from meshctl.compile.cookies import assign_cookies
from meshctl.compile.documents import Document
from meshctl.compile.identities import (
    RESERVED_LABELS,
    EndpointTable,
    IdentityTable,
    cidr_identities,
    fqdn_cidr_identities,
)
from meshctl.compile.ir import CidrRule, CompileWarning, Isolation, Peers, Rule, Translated
from meshctl.compile.labels import identity_label_sets
from meshctl.compile.mapstate import DnsGrant, Grant, HttpGrant, MapState, build_mapstate
from meshctl.compile.selectors import SelectorIndex
from meshctl.compile.spec import ClusterSpec, PodSpec, spec_from_desired
from meshctl.compile.translate import PROTOCOLS, translate
from meshctl.fqdnmatch import selector_sets
from meshctl.gcpause import paused_gc
from meshctl.model.staging import policy_digest
from meshctl.nodestate import (
    DNS_PORT,
    PROTO_TCP,
    PROTO_UDP,
    Attachment,
    DatapathConfig,
    Direction,
    DnsPolicy,
    EndpointEntry,
    FrozenMap,
    HttpPolicy,
    IpcacheEntry,
    NodeState,
    PolicyEntry,
    PolicyKey,
    ReservedIdentity,
    audit_map_id,
    fqdn_in_cidr_key,
    fqdn_set_key,
)

R = ReservedIdentity
CLUSTER_ENTITY_RESERVED = (R.HOST, R.REMOTE_NODE, R.INIT, R.HEALTH, R.UNMANAGED, R.INGRESS, R.KUBE_APISERVER)
ENTITY_IDS = {
    "host": (R.HOST,),
    "remote-node": (R.REMOTE_NODE,),
    "health": (R.HEALTH,),
    "init": (R.INIT,),
    "unmanaged": (R.UNMANAGED,),
    "kube-apiserver": (R.KUBE_APISERVER,),
    "ingress": (R.INGRESS,),
    "world": (R.WORLD,),
    "world-ipv4": (R.WORLD,),
    "none": (),
}


@dataclass(frozen=True)
class ResolvedPeers:
    """Peers as identities; CIDR rules and world stay symbolic until a node's prefixes are known."""

    wildcard: bool
    identities: frozenset[int]
    cidrs: tuple[CidrRule, ...]
    fqdn_ids: frozenset[int] = frozenset()  # every toFQDNs identity: world selects them too

    def on_node(self, node_cidrs: NodeCidrs) -> tuple[int, ...]:
        if self.wildcard:
            return (0,)
        hit = node_cidrs.cache.get(self)
        if hit is not None:
            return hit
        ids = set(self.identities)
        if R.WORLD in ids:  # CIDR identities and the IPs learned for toFQDNs are world too
            ids.update(node_cidrs.ids.values())
            ids.update(self.fqdn_ids)
        for rule in self.cidrs:
            if rule.cidr.prefixlen == 0:
                ids.add(R.WORLD)
            ids.update(node_cidrs.within(rule))
        # a learned IP inside a CIDR prefix is both: the rules of either allow it
        ids.update(k for fqdn, cidr, k in node_cidrs.fqdn_in_cidr if fqdn in ids or cidr in ids)
        out = tuple(sorted(ids))
        node_cidrs.cache[self] = out
        return out


def _net_order(item: tuple[IPv4Network, Any]) -> tuple[int, int]:
    """IPv4Network's own order (address, then prefix length), as plain integers."""
    return int(item[0].network_address), item[0].prefixlen


def _with_prefixes(
    pods: FrozenMap[IPv4Network, IpcacheEntry],
    order: list[tuple[int, int]],
    prefixes: Mapping[IPv4Network, int],
) -> FrozenMap[IPv4Network, IpcacheEntry]:
    """The pods' ipcache (in address order, `order` its _net_order keys) with a node's few CIDR
    prefixes inserted in place; the very same map when the node has none (nodes share it)."""
    if not prefixes:
        return pods
    items = list(pods.items())
    keys = list(order)
    for item in sorted(((p, IpcacheEntry(i)) for p, i in prefixes.items()), key=_net_order):
        at = bisect.bisect_left(keys, _net_order(item))
        items.insert(at, item)
        keys.insert(at, _net_order(item))
    return FrozenMap.from_sorted(items)


class NodeCidrs:
    """A node's CIDR identities, with integer prefix math and a per-peer-set cache."""

    def __init__(self, ids: Mapping[IPv4Network, int],
                 fqdn_in_cidr: Iterable[tuple[int, int, int]] = ()) -> None:
        self.ids = dict(ids)
        # (toFQDNs identity, CIDR identity, the identity of IPs it learns inside that prefix)
        self.fqdn_in_cidr = tuple(fqdn_in_cidr)
        self._ints = [(int(p.network_address), p.prefixlen, i) for p, i in sorted(ids.items())]
        self.cache: dict[ResolvedPeers, tuple[int, ...]] = {}

    def within(self, rule: CidrRule) -> list[int]:
        def inside(addr: int, plen: int, net: IPv4Network) -> bool:
            return plen >= net.prefixlen and (addr ^ int(net.network_address)) >> (32 - net.prefixlen) == 0

        return [
            i
            for addr, plen, i in self._ints
            if inside(addr, plen, rule.cidr) and not any(inside(addr, plen, e) for e in rule.excepts)
        ]


@dataclass
class Compiled:
    nodes: dict[str, NodeState]
    catalog: Catalog
    identities: IdentityTable
    endpoint_ids: EndpointTable
    warnings: tuple[CompileWarning, ...]
    spec: ClusterSpec
    rules: tuple[Rule, ...] = ()
    isolations: tuple[Isolation, ...] = ()
    pod_identity: dict[str, int] = field(default_factory=dict)  # "ns/pod" -> identity
    origins: dict[int, RuleOrigin] = field(default_factory=dict)  # cookie -> origin
    # staged policies (audit mode): compiled into each endpoint's audit map, never enforced
    staged_rules: tuple[Rule, ...] = ()
    staged_isolations: tuple[Isolation, ...] = ()
    memo: CompileMemo | None = field(default=None, repr=False, compare=False)  # for the next compile

    @property
    def staged_digests(self) -> dict[str, str]:
        """"Kind ns/name" -> the staged policy's content digest (its version, mode aside)."""
        return {d.title: policy_digest(d.body) for d in self.spec.policies if d.staged}


class _Clock:
    def __init__(self, sink: dict[str, float] | None) -> None:
        import time

        self._now = time.perf_counter
        self.sink, self.last = sink, self._now()

    def __call__(self, phase: str) -> None:
        if self.sink is not None:
            now = self._now()
            self.sink[phase] = now - self.last
            self.last = now


class _Compiler:
    def __init__(self, spec: ClusterSpec, identities: IdentityTable) -> None:
        self.spec = spec
        sets = identity_label_sets(((p.namespace, p.labels) for p in spec.pods), spec.namespace_labels,
                                   spec.cluster)
        self.pod_labels = {p.key: label_set for p, label_set in zip(spec.pods, sets, strict=True)}
        self.identities = identities.allocate(self.pod_labels.values())
        self.pod_identity = {k: self.identities.by_labels[ls] for k, ls in self.pod_labels.items()}
        self.cluster_ids = frozenset(self.pod_identity.values())
        universe: dict[int, tuple[str, ...]] = {int(i): ls for i, ls in RESERVED_LABELS.items()}
        for ident in self.cluster_ids:
            universe[ident] = self.identities_labels(ident)
        self.index = SelectorIndex(universe)
        # named ports per identity: (name, protocol) -> set of port numbers
        self.named: dict[int, dict[tuple[str, int], set[int]]] = {}
        for pod in spec.pods:
            table = self.named.setdefault(self.pod_identity[pod.key], {})
            for name, port, proto in pod.ports:
                if name and proto.upper() in PROTOCOLS:
                    table.setdefault((name, PROTOCOLS[proto.upper()]), set()).add(port)
        self._peer_cache: dict[Peers, ResolvedPeers] = {}
        self.warnings: list[CompileWarning] = []
        self.fqdn: FrozenMap[str, int] = FrozenMap()  # toFQDNs selector text -> its identity
        self.fqdn_ids: frozenset[int] = frozenset()
        self.fqdn_with: dict[str, set[int]] = {}  # selector text -> its identity and its sets'

    def allocate_fqdns(self, rules: Iterable[Rule]) -> None:
        """An identity per toFQDNs selector, made when the selector first appears (Cilium's
        pre-allocation): a learned IP then costs one ipcache write, and the plan shows them. A
        name several selectors select (api.stripe.com and *.stripe.com) needs an identity every
        one of their rules allows: one per set of overlapping selectors, allowed wherever a
        member is (Cilium allocates the label set's identity when the answer comes)."""
        selectors = {sel for r in rules for sel in r.peers.fqdns}
        labels = {sel.text: (sel.label,) for sel in selectors}
        sets = {fqdn_set_key(s.text for s in members): members for members in selector_sets(selectors)}
        labels.update({key: tuple(sorted(s.label for s in members)) for key, members in sets.items()})
        self.identities = self.identities.allocate(labels.values())
        self.fqdn = FrozenMap({text: self.identities.by_labels[ls] for text, ls in labels.items()})
        self.fqdn_ids = frozenset(self.fqdn.values())
        self.fqdn_with = {sel.text: {self.fqdn[sel.text]} for sel in selectors}
        for key, members in sets.items():
            for sel in members:
                self.fqdn_with[sel.text].add(self.fqdn[key])

    @classmethod
    def restored(cls, spec: ClusterSpec, identities: IdentityTable, cluster_ids: Iterable[int],
                 index: SelectorIndex, named: dict[int, dict[tuple[str, int], set[int]]]) -> _Compiler:
        """The compiler of a universe a previous compile worked out (meshctl.compile.partial): the
        pods' identities, the selector index and the named ports; `spec` gives mode and cluster."""
        self = cls.__new__(cls)
        self.spec, self.pod_labels, self.identities = spec, {}, identities
        self.pod_identity = {}
        self.cluster_ids = frozenset(cluster_ids)
        self.index, self.named = index, named
        self._peer_cache, self.warnings = {}, []
        self.fqdn, self.fqdn_ids, self.fqdn_with = FrozenMap(), frozenset(), {}
        return self

    def identities_labels(self, ident: int) -> tuple[str, ...]:
        rev = getattr(self, "_rev", {})
        if len(rev) != len(self.identities.by_labels):  # built again once the table grew (toFQDNs)
            rev = self._rev = {i: ls for ls, i in self.identities.by_labels.items()}
        return rev[ident]

    def resolve_peers(self, peers: Peers) -> ResolvedPeers:
        hit = self._peer_cache.get(peers)
        if hit is not None:
            return hit
        ids: set[int] = set()
        wildcard = peers.wildcard or "all" in peers.entities
        for sel in peers.selectors:
            ids |= self.index.select(sel)
        for ent in peers.entities:
            if ent == "cluster":
                ids |= self.cluster_ids
                ids.update(CLUSTER_ENTITY_RESERVED)
            else:
                ids.update(ENTITY_IDS.get(ent, ()))
        for sel in peers.fqdns:
            ids |= self.fqdn_with[sel.text]
        out = ResolvedPeers(wildcard, frozenset(ids), peers.cidrs, self.fqdn_ids)
        self._peer_cache[peers] = out
        return out


T = TypeVar("T", Rule, Isolation)


def _by_subject(c: _Compiler, items: Iterable[T]) -> dict[int, list[T]]:
    """identity -> the items whose subject selects it."""
    out: dict[int, list[T]] = {}
    for item in items:
        for ident in c.index.select(item.subject):
            out.setdefault(ident, []).append(item)
    return out


def _ports_for(
    c: _Compiler, rule: Rule, peer_ids: tuple[int, ...], pod: PodSpec, warn: list[CompileWarning]
) -> list[tuple[tuple[int, ...], tuple[tuple[int, int, int], ...] | None]]:
    """(peer identities, port ranges) groups for one rule, named ports resolved."""
    if rule.ports is None:
        return [(peer_ids, None)]
    numeric = tuple((p.protocol, p.first, p.last) for p in rule.ports if p.name is None)
    groups: list[tuple[tuple[int, ...], tuple[tuple[int, int, int], ...] | None]] = []
    if numeric:
        groups.append((peer_ids, numeric))
    named = [p for p in rule.ports if p.name is not None]
    if not named:
        return groups
    if rule.direction == Direction.INGRESS:
        own = {(n, PROTOCOLS.get(proto.upper(), -1)): port for n, port, proto in pod.ports if n}
        resolved = tuple(
            (p.protocol, own[(p.name, p.protocol)], own[(p.name, p.protocol)])
            for p in named
            if (p.name, p.protocol) in own
        )
        if resolved:
            groups.append((peer_ids, resolved))
        return groups
    # egress: resolve on each destination identity's pods (Kubernetes semantics)
    targets = sorted(c.cluster_ids) if peer_ids == (0,) else [i for i in peer_ids if i in c.named]
    per_ident: dict[tuple[tuple[int, int, int], ...], list[int]] = {}
    for ident in targets:
        table = c.named.get(ident, {})
        ranges = []
        for p in named:
            ports = table.get((p.name or "", p.protocol))
            if not ports:
                continue
            if len(ports) > 1:
                warn.append(
                    CompileWarning(
                        "named-port",
                        f"{rule.origin}: named port {p.name} means {sorted(ports)} on pods of one identity "
                        f"({c.identities_labels(ident)}); like Cilium, the port is not allowed",
                        None,
                    )
                )
                continue
            port = next(iter(ports))
            ranges.append((p.protocol, port, port))
        if ranges:
            per_ident.setdefault(tuple(sorted(ranges)), []).append(ident)
    for ranges, idents in sorted(per_ident.items()):
        groups.append((tuple(idents), ranges))
    return groups


def compile_spec(
    spec: ClusterSpec,
    identities: IdentityTable,
    endpoint_ids: EndpointTable,
    build_hash: str,
    timings: dict[str, float] | None = None,
    memo: CompileMemo | None = None,
) -> Compiled:
    """Compile a ClusterSpec; `timings`, when given, receives seconds per phase (the bench).

    `memo` (a previous result's Compiled.memo) makes the compile incremental: an endpoint whose
    inputs are unchanged gets its previous policy map (the same object), as Cilium regenerates
    only the endpoints a change selects. The result equals a compile without it."""
    # A big compile allocates about a million small acyclic objects: the cyclic collector would
    # rescan them again and again for nothing (a third of the time), so it pauses meanwhile.
    with paused_gc():
        return _compile_spec(spec, identities, endpoint_ids, build_hash, timings, memo)


def _compile_spec(
    spec: ClusterSpec,
    identities: IdentityTable,
    endpoint_ids: EndpointTable,
    build_hash: str,
    timings: dict[str, float] | None,
    memo: CompileMemo | None,
) -> Compiled:
    clock = _Clock(timings)
    c = _Compiler(spec, identities)
    clock("identities")
    known = memo.translations if memo is not None else {}
    doc_keys = [_doc_key(doc) for doc in spec.policies]
    made_docs = {k: known.get(k) or translate(doc) for k, doc in zip(doc_keys, spec.policies, strict=True)}
    translated = [made_docs[k] for k in doc_keys]
    enforced = [t for doc, t in zip(spec.policies, translated, strict=True) if not doc.staged]
    staged = [t for doc, t in zip(spec.policies, translated, strict=True) if doc.staged]
    rules = tuple(r for t in enforced for r in t.rules)
    isolations = tuple(i for t in enforced for i in t.isolations)
    staged_rules = tuple(r for t in staged for r in t.rules)
    staged_isolations = tuple(i for t in staged for i in t.isolations)
    warnings: list[CompileWarning] = [w for t in translated for w in t.warnings]
    cookies = assign_cookies(
        [r.origin for r in rules + staged_rules] + [i.origin for i in isolations + staged_isolations]
    )
    c.allocate_fqdns(rules + staged_rules)

    clock("translate")
    # subject identity -> rules / isolations, enforced and staged
    by_subject = _by_subject(c, rules)
    iso_by_subject = _by_subject(c, isolations)
    staged_by_subject = _by_subject(c, staged_rules)
    staged_iso_by_subject = _by_subject(c, staged_isolations)

    clock("selectors")
    pod_key = {id(p): p.key for p in spec.pods}  # "ns/name", made once per pod
    entry_of: dict[int, IpcacheEntry] = {}
    ipcache_pods: dict[IPv4Network, IpcacheEntry] = {}
    for pod in sorted(spec.pods, key=lambda p: int(p.ip) if p.ip else -1):
        if pod.ip is not None:
            ident = c.pod_identity[pod_key[id(pod)]]
            entry = entry_of.get(ident)
            if entry is None:
                entry = entry_of[ident] = IpcacheEntry(ident)  # one object per identity, shared
            ipcache_pods[IPv4Network(int(pod.ip))] = entry

    # CIDR identities are derived from the prefix alone, so peers are resolved once against every
    # prefix of the cluster; each node's ipcache carries only the prefixes its endpoints use.
    all_prefixes = {p for r in rules + staged_rules for cr in r.peers.cidrs for p in (cr.cidr, *cr.excepts)}
    all_prefixes.discard(IPv4Network("0.0.0.0/0"))
    cluster_cidrs = {p: i for p, i in cidr_identities(all_prefixes).items() if p not in ipcache_pods}
    pod_ipcache = sorted(ipcache_pods.items(), key=_net_order)
    pod_ipcache_map = FrozenMap.from_sorted(pod_ipcache)  # the ipcache of a node without CIDR prefixes
    pod_order = [_net_order(item) for item in pod_ipcache]
    sorted_ports: dict[tuple[Any, ...], tuple[Any, ...]] = {}
    isolation_by_ident: dict[int, FrozenMap[Direction, tuple[str, ...]]] = {}
    fqdn_in_cidr = fqdn_cidr_identities(
        ((text, p) for text in c.fqdn for p in cluster_cidrs if p.prefixlen < 32), cluster_cidrs.values())
    node_cidr_index = NodeCidrs(cluster_cidrs, ((c.fqdn[text], cluster_cidrs[p], k)
                                                for (text, p), k in fqdn_in_cidr.items()))
    universe = _universe(c, cluster_cidrs, spec.mode)
    previous = memo.endpoints if memo is not None and memo.universe == universe else {}
    cache: dict[tuple[int, tuple[Any, ...]], _Memoized] = {}
    nodes: dict[str, NodeState] = {}
    catalog_eps: dict[str, FrozenMap[int, str]] = {}
    isolation_cat: dict[str, FrozenMap[Direction, tuple[str, ...]]] = {}
    staged_cat: dict[str, FrozenMap[Direction, tuple[str, ...]]] = {}
    staged_isolation_cat: dict[str, FrozenMap[Direction, tuple[str, ...]]] = {}
    l7_seen: set[tuple[RuleOrigin, RuleOrigin]] = set()
    cidr_catalog: dict[int, IPv4Network] = {}
    for node in spec.nodes:
        local = [p for p in spec.pods if p.node == node and p.ip is not None]
        endpoint_ids = endpoint_ids.allocate(node, [p.key for p in local])
        local_ids = {c.pod_identity[p.key] for p in local}
        prefixes: set[IPv4Network] = set()
        for ident in local_ids:
            for rule in (*by_subject.get(ident, ()), *staged_by_subject.get(ident, ())):
                for cr in rule.peers.cidrs:
                    prefixes.add(cr.cidr)
                    prefixes.update(cr.excepts)
        prefixes.discard(IPv4Network("0.0.0.0/0"))
        node_cidrs = {p: cluster_cidrs[p] for p in prefixes if p in cluster_cidrs}
        for p, i in node_cidrs.items():
            cidr_catalog[i] = p
        ipcache = _with_prefixes(pod_ipcache_map, pod_order, node_cidrs)
        in_cidr = {fqdn_in_cidr_key(text, p): k for (text, p), k in fqdn_in_cidr.items() if p in node_cidrs}

        endpoints: dict[IPv4Address, EndpointEntry] = {}
        policies: dict[int, FrozenMap[PolicyKey, PolicyEntry]] = {}
        http: list[HttpPolicy] = []
        dns: list[DnsPolicy] = []
        eps_cat: dict[int, str] = {}
        node_eps = endpoint_ids.by_pod.get(node, {})
        for pod in sorted(local, key=lambda p: pod_key[id(p)]):
            key = pod_key[id(pod)]
            ident = c.pod_identity[key]
            ep_id = node_eps[key]
            ports = sorted_ports.get(pod.ports)
            if ports is None:
                ports = sorted_ports[pod.ports] = tuple(sorted(pod.ports, key=str))
            ck = (ident, ports)
            made = cache.get(ck)
            if made is None:
                inputs = _Inputs.of(
                    by_subject.get(ident, []), iso_by_subject.get(ident, []),
                    staged_by_subject.get(ident, []), staged_iso_by_subject.get(ident, []), cookies,
                )
                made = previous.get(ck)
                if made is None or made.inputs != inputs:
                    made = _endpoint(c, spec.mode, inputs, pod, node_cidr_index, cookies)
                cache[ck] = made
                warnings.extend(made.warnings)
                l7_seen.update(made.ineffective_l7)
            entries, enf_in, enf_out, audit = made.entries, made.enforce_in, made.enforce_out, made.audit
            policies[ep_id] = entries
            eps_cat[ep_id] = key
            http.extend(HttpPolicy(pod.ip, Direction(d), first, last, peer, cookies[origin], rules)  # type: ignore[arg-type]
                        for d, peer, first, last, origin, rules in made.http)
            dns.extend(DnsPolicy(pod.ip, first, last, peer, cookies[origin], names)  # type: ignore[arg-type]
                       for peer, first, last, origin, names in made.dns)
            if audit is None:
                endpoints[pod.ip] = EndpointEntry(ep_id, ident, enf_in, enf_out)  # type: ignore[index]
            else:
                endpoints[pod.ip] = EndpointEntry(  # type: ignore[index]
                    ep_id, ident, enf_in, enf_out, audit.directions[0], audit.directions[1]
                )
                policies[audit_map_id(ep_id)] = audit.entries
                staged_cat[key] = audit.staged
                staged_isolation_cat[key] = audit.isolation
            isos = iso_by_subject.get(ident, [])
            if isos and spec.mode == "default":
                if ident not in isolation_by_ident:
                    per_dir = {
                        d: tuple(sorted({i.policy for i in isos if i.direction == d}))
                        for d in (Direction.INGRESS, Direction.EGRESS)
                    }
                    isolation_by_ident[ident] = FrozenMap({d: v for d, v in per_dir.items() if v})
                isolation_cat[key] = isolation_by_ident[ident]
        attachments = frozenset(
            Attachment(ip, hook, build_hash) for ip in endpoints for hook in ("from-pod", "to-pod")
        )
        nodes[node] = NodeState(
            node=node,
            config=DatapathConfig(ipv6_pass=spec.ipv6_pass, proxy=bool(http or dns)),
            ipcache=ipcache,
            endpoints=FrozenMap.from_sorted(sorted(endpoints.items(), key=lambda kv: int(kv[0]))),
            policies=FrozenMap(policies),
            attachments=attachments,
            http=frozenset(http),
            dns=frozenset(dns),
            # the DNS proxy of a node whose endpoints ask it learns IPs for every selector: world
            # rules take them in wherever they are used; inside one of the node's CIDR prefixes an
            # IP takes the identity of both; and the proxy's settings
            fqdn=FrozenMap({**c.fqdn, **in_cidr, **dict(spec.dns_settings)}) if dns else FrozenMap(),
        )
        catalog_eps[node] = FrozenMap(eps_cat)

    clock("nodes")
    warnings.extend(l7_warning(pair) for pair in sorted(l7_seen))
    pods_by_ident: dict[int, list[str]] = {}
    for key, ident in c.pod_identity.items():
        pods_by_ident.setdefault(ident, []).append(key)
    infos: dict[int, IdentityInfo] = {int(i): IdentityInfo(int(i), ls) for i, ls in RESERVED_LABELS.items()}
    for ident in c.cluster_ids:
        infos[ident] = IdentityInfo(ident, c.identities_labels(ident), tuple(sorted(pods_by_ident[ident])))
    for ident, prefix in cidr_catalog.items():
        infos[ident] = IdentityInfo(ident, (f"cidr:{prefix}", "reserved:world"))
    for ident in c.fqdn_ids:  # the IPs learned for a selector (or a set of them) are world too
        infos[ident] = IdentityInfo(ident, (*c.identities_labels(ident), "reserved:world"))
    for (key, prefix), ident in fqdn_in_cidr.items():
        labels = (*c.identities_labels(c.fqdn[key]), f"cidr:{prefix}", "reserved:world")
        infos[ident] = IdentityInfo(ident, labels)
    origin_by_cookie = {ck: o for o, ck in cookies.items()}
    catalog = Catalog(
        identities=FrozenMap(infos),
        endpoints=FrozenMap(catalog_eps),
        cookies=FrozenMap(origin_by_cookie),
        isolation=FrozenMap(isolation_cat),
        staged=FrozenMap(staged_cat),
        staged_isolation=FrozenMap(staged_isolation_cat),
    )
    clock("catalog")
    return Compiled(
        nodes=nodes,
        catalog=catalog,
        identities=c.identities,
        endpoint_ids=endpoint_ids,
        warnings=tuple(dict.fromkeys(sorted(set(warnings), key=str))),
        spec=spec,
        rules=rules,
        isolations=isolations,
        pod_identity=dict(c.pod_identity),
        origins=origin_by_cookie,
        staged_rules=staged_rules,
        staged_isolations=staged_isolations,
        memo=CompileMemo(universe, cache, made_docs),
    )


def l7_warning(pair: tuple[RuleOrigin, RuleOrigin]) -> CompileWarning:
    """An L7 rule (first) whose peer and port an L4 rule (second) already allows."""
    l7_origin, plain = pair
    return CompileWarning(
        "l7-ineffective",
        f"{l7_origin}: L7 rule is ineffective: {plain} already allows the same peer and port at L4",
        None,
    )


def _universe(c: _Compiler, cluster_cidrs: Mapping[IPv4Network, int], mode: str) -> tuple[Any, ...]:
    """What every endpoint's policy depends on besides its own rules: the identities (peers
    resolve against them), their named ports, the cluster's CIDR identities and the mode."""
    named = tuple(sorted((i, tuple(sorted((k, tuple(sorted(v))) for k, v in t.items())))
                         for i, t in c.named.items()))
    return (tuple(sorted(c.identities.by_labels.items())), named, tuple(sorted(cluster_cidrs.items())), mode)


@dataclass(frozen=True)
class _Inputs:
    """One identity's own inputs: the rules and isolations selecting it, enforced and staged, and
    the cookies of their origins (a cookie moves only on a hash collision)."""

    rules: tuple[Rule, ...]
    isolations: tuple[Isolation, ...]
    staged_rules: tuple[Rule, ...]
    staged_isolations: tuple[Isolation, ...]
    cookies: tuple[int, ...]

    @classmethod
    def of(cls, rules: list[Rule], isolations: list[Isolation], staged_rules: list[Rule],
           staged_isolations: list[Isolation], cookies: dict[RuleOrigin, int]) -> _Inputs:
        items = (*rules, *isolations, *staged_rules, *staged_isolations)
        return cls(tuple(rules), tuple(isolations), tuple(staged_rules), tuple(staged_isolations),
                   tuple(cookies[x.origin] for x in items))


@dataclass(frozen=True)
class _Memoized:
    """One (identity, ports) endpoint policy and what compiling it said."""

    inputs: _Inputs
    entries: FrozenMap[PolicyKey, PolicyEntry]
    enforce_in: bool
    enforce_out: bool
    audit: _Audit | None
    warnings: tuple[CompileWarning, ...]
    ineffective_l7: tuple[tuple[RuleOrigin, RuleOrigin], ...]
    http: tuple[HttpGrant, ...] = ()
    dns: tuple[DnsGrant, ...] = ()


@dataclass(frozen=True)
class CompileMemo:
    """A compile's translations and endpoint policies, for the next compile (compile_spec); the
    endpoint policies serve only a compile of the same universe."""

    universe: tuple[Any, ...]
    endpoints: Mapping[tuple[int, tuple[Any, ...]], _Memoized]
    translations: Mapping[tuple[Any, ...], Translated]


def _doc_key(doc: Document) -> tuple[Any, ...]:
    """Everything translate() reads of a document: its body and where its lines are."""
    src = doc.source
    where = (src.file, src.line, repr(src.lines)) if src is not None else None
    return (doc.kind, doc.namespace, doc.name, doc.staged, where, repr(doc.body))


def _endpoint(
    c: _Compiler,
    mode: str,
    inputs: _Inputs,
    pod: PodSpec,
    node_cidrs: NodeCidrs,
    cookies: dict[RuleOrigin, int],
) -> _Memoized:
    said: list[CompileWarning] = []
    rules, isos = list(inputs.rules), list(inputs.isolations)
    ms, enf_in, enf_out = _endpoint_policy(c, mode, rules, isos, pod, node_cidrs, cookies, said)
    audit = _audit_policy(c, mode, rules, isos, list(inputs.staged_rules), list(inputs.staged_isolations),
                          pod, node_cidrs, cookies, said)
    return _Memoized(inputs, ms.entries, enf_in, enf_out, audit, tuple(said), ms.ineffective_l7, ms.http,
                     ms.dns)


def _endpoint_policy(
    c: _Compiler,
    mode: str,
    rules: Iterable[Rule],
    isolations: list[Isolation],
    pod: PodSpec,
    node_cidrs: NodeCidrs,
    cookies: dict[RuleOrigin, int],
    warnings: list[CompileWarning],
) -> tuple[MapState, bool, bool]:
    if mode == "never":
        return MapState(FrozenMap(), ()), False, False
    enforce = {}
    grants: list[Grant] = []
    for d in (Direction.INGRESS, Direction.EGRESS):
        isos = [i for i in isolations if i.direction == d]
        enforce[d] = mode == "always" or bool(isos)
        # Cilium synthesizes the allow-all of default-allow rules only outside mode always
        if mode != "always" and isos and not any(i.default_deny for i in isos):
            first = min(i.origin for i in isos)
            grants.append(Grant(first, d, False, (0,), None))
    if enforce[Direction.EGRESS]:
        warnings.extend(unlearned_fqdns(rules))
    for rule in rules:
        if not enforce[rule.direction]:
            continue
        peer_ids = c.resolve_peers(rule.peers).on_node(node_cidrs)
        if not peer_ids:
            continue
        for idents, ports in _ports_for(c, rule, peer_ids, pod, warnings):
            grants.append(Grant(rule.origin, rule.direction, rule.deny, idents, ports, bool(rule.l7),
                                rule.http, None if rule.dns is None else tuple(s.text for s in rule.dns)))
    return build_mapstate(grants, cookies), enforce[Direction.INGRESS], enforce[Direction.EGRESS]


def unlearned_fqdns(rules: Iterable[Rule]) -> list[CompileWarning]:
    """Cilium's most copied trap: toFQDNs selects only IPs that the DNS proxy learns from the
    answers it sees, and it sees an endpoint's queries only when an egress rule with `rules.dns`
    allows them. Without one, every connection to those names is dropped."""
    egress = [r for r in rules if r.direction == Direction.EGRESS and not r.deny]
    if not any(r.peers.fqdns for r in egress) or any(r.dns is not None for r in egress):
        return []
    plain_dns = [r for r in egress if r.ports and any(p.protocol in (PROTO_UDP, PROTO_TCP) and not p.name
                                                      and p.first <= DNS_PORT <= p.last for p in r.ports)]
    out = []
    for rule in egress:
        if not rule.peers.fqdns:
            continue
        names = ", ".join(s.text for s in rule.peers.fqdns)
        where = rule.origin.located
        if plain_dns:
            # the port-53 rule of the same policy first: the one its author is looking at
            dns = min(plain_dns, key=lambda r: (r.origin.policy != rule.origin.policy, r.origin)).origin
            cause = (f"{dns.located} allows DNS (port 53) without `rules.dns`, so the DNS proxy never "
                     "sees the answers")
            fix = f"add `rules: {{dns: [{{matchPattern: \"*\"}}]}}` to the port-53 toPorts of {dns}"
        else:
            cause = "no egress rule of this endpoint allows DNS (port 53) through the DNS proxy"
            fix = ("allow DNS to kube-dns on 53/UDP and 53/TCP with `rules: {dns: [{matchPattern: \"*\"}]}` "
                   "(or the names this rule needs)")
        out.append(CompileWarning(
            "fqdn-not-learned",
            f"{where}: toFQDNs ({names}) will never learn an IP and every connection to these names "
            f"will be dropped: {cause}. Fix: {fix}", None))
    return out


@dataclass(frozen=True)
class _Audit:
    """An endpoint's enforced+staged view, for the directions its staged policies touch."""

    entries: FrozenMap[PolicyKey, PolicyEntry]
    directions: tuple[bool, bool]  # (ingress, egress) audited
    staged: FrozenMap[Direction, tuple[str, ...]]  # the staged policies per audited direction
    isolation: FrozenMap[Direction, tuple[str, ...]]  # who isolates it once they are enforced


def _audit_policy(
    c: _Compiler,
    mode: str,
    rules: list[Rule],
    isolations: list[Isolation],
    staged_rules: list[Rule],
    staged_isolations: list[Isolation],
    pod: PodSpec,
    node_cidrs: NodeCidrs,
    cookies: dict[RuleOrigin, int],
    warnings: list[CompileWarning],
) -> _Audit | None:
    """None when no staged policy selects the pod (it then pays nothing in the datapath).

    A direction is audited when a staged policy has a section for it and the enforced+staged
    view enforces it; the audit map is that view whole (the datapath compares two verdicts)."""
    if mode == "never" or not (staged_rules or staged_isolations):
        return None
    every = rules + staged_rules
    isos = isolations + staged_isolations
    ms, enf_in, enf_out = _endpoint_policy(c, mode, every, isos, pod, node_cidrs, cookies, warnings)
    touched = {r.direction for r in staged_rules} | {i.direction for i in staged_isolations}
    audited = (enf_in and Direction.INGRESS in touched, enf_out and Direction.EGRESS in touched)
    if not any(audited):
        return None
    dirs = [d for d, on in zip((Direction.INGRESS, Direction.EGRESS), audited, strict=True) if on]

    def names(items: Iterable[Rule | Isolation], d: Direction) -> tuple[str, ...]:
        return tuple(sorted({_policy_title(x) for x in items if x.direction == d}))

    return _Audit(
        ms.entries,
        audited,
        FrozenMap({d: names([*staged_rules, *staged_isolations], d) for d in dirs}),
        FrozenMap({d: v for d in dirs if (v := names(isos, d))}),
    )


def _policy_title(item: Rule | Isolation) -> str:
    """"Kind ns/name", as Isolation.policy and Document.title write it."""
    if isinstance(item, Isolation):
        return item.policy
    o = item.origin
    return f"{o.kind} {o.namespace}/{o.name}" if o.namespace else f"{o.kind} {o.name}"


def compile_cluster(
    desired: Any, identities: IdentityTable, endpoint_ids: EndpointTable, build_hash: str,
    memo: CompileMemo | None = None,
) -> Compiled:
    """The compiler's public entry point (see the module docstring; `memo`: compile_spec's)."""
    return compile_spec(spec_from_desired(desired), identities, endpoint_ids, build_hash, memo=memo)


__all__ = ["Compiled", "Translated", "compile_cluster", "compile_spec"]
