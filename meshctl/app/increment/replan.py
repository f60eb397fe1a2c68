"""Replan from a baseline: recompile only the classes that edited policy files select.

`replan` is pure (no kernel): the edited files' new texts and a baseline give the intended
NodeStates, catalog and compile warnings a full compile of the edited repo would give, plus,
per node, the endpoints whose policy maps may differ from the baseline (the only maps the plan
must read). It returns None whenever the edit reaches beyond what the baseline can answer: a
file holding anything but policies, a staged policy, a new CIDR prefix, a cookie collision.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable, Iterator, Mapping, Sequence
from dataclasses import dataclass, replace
from ipaddress import IPv4Address, IPv4Network
from typing import Any

from meshctl.app.increment.stubs import KnownPolicyMap, RowsMap, RowsSet
from meshctl.catalog import Catalog, IdentityInfo, RuleOrigin
from meshctl.compile.cluster import l7_warning
from meshctl.compile.cookies import assign_cookies
from meshctl.compile.documents import Document, as_document
from meshctl.compile.identities import IdentityTable
from meshctl.compile.ir import CompileWarning, SourceRef, Translated
from meshctl.compile.partial import ClassKey, ClassPolicy, PartialCompiler, needs_full_plan
from meshctl.compile.spec import ClusterSpec
from meshctl.compile.translate import translate
from meshctl.nodestate import (
    Attachment,
    DatapathConfig,
    Direction,
    EndpointEntry,
    FrozenMap,
    IpcacheEntry,
    NodeState,
    PolicyEntry,
    PolicyKey,
    attachments_text,
    patched,
)
from meshctl.plan.impact import PodTarget

HOOKS = ("from-pod", "to-pod")
Edits = Mapping[str, "str | None"]  # file -> its new text (None: deleted)


@dataclass(frozen=True)
class Replanned:
    intended: dict[str, NodeState]
    baseline: dict[str, NodeState]  # the nodes as the baseline found them (untouched maps shared)
    catalog: Catalog
    warnings: tuple[CompileWarning, ...]
    # node -> endpoint id -> its address and baseline entry: the endpoints whose maps may differ
    touched: dict[str, dict[int, tuple[IPv4Address, EndpointEntry]]]
    pods: Sequence[PodTarget]  # every endpoint's pod, for the connections a plan cuts


def _origin(row: Iterable[Any]) -> RuleOrigin:
    return RuleOrigin(*row)


def _warning(row: tuple[Any, ...]) -> CompileWarning:
    return CompileWarning(row[0], row[1], SourceRef(row[2], row[3]) if len(row) > 2 else None)


def documents(rel: str, text: str, audit_namespaces: Iterable[str] = ()) -> list[Document] | None:
    """The policies of one file as the loader validates them; None when it holds anything else."""
    from meshctl.source.documents import Documents, add_document
    from meshctl.source.yamlines import load_documents

    docs = Documents()
    for doc in load_documents(text, rel):
        add_document(doc, docs)
    if docs.namespaces or docs.pods or docs.checks or docs.services:
        return None
    lines = {key: doc.lines for key, doc in docs.yaml.items()}
    return [as_document(p, lines, tuple(audit_namespaces)) for p in docs.policies]


def replan(base: Mapping[str, Any], edits: Edits, read: Callable[[str], str | None],
           audit_namespaces: Iterable[str] = ()) -> Replanned | None:
    """`edits`: the policy files changed since the baseline; `read(rel)`: an unchanged file's text
    (the policies that share a class with the edited ones are translated again)."""
    file_titles: dict[str, list[str]] = base["file_titles"]
    if base["full_only"] or any(rel in base["mixed"] for rel in edits):
        return None
    new_docs: dict[str, Document] = {}
    titles = {rel: list(ts) for rel, ts in file_titles.items()}
    for rel, text in edits.items():
        if text is None:
            titles.pop(rel, None)
            continue
        docs = documents(rel, text, audit_namespaces)
        if docs is None or any(d.staged for d in docs):
            return None
        titles[rel] = [d.title for d in docs]
        new_docs.update((d.title, d) for d in docs)
    order = [t for rel in sorted(titles) for t in titles[rel]]
    if len(set(order)) != len(order):
        return None  # a duplicate: the full load names it
    gone = {t for rel in edits for t in file_titles.get(rel, ())}

    spec = _universe(base)
    identities = IdentityTable.from_dict(base["identity_table"])
    cidrs = {IPv4Network(p): i for p, i in base["cidrs"]}
    partial = PartialCompiler.restored(spec, identities, cidrs, base["universe"])
    translated = {t: translate(d) for t, d in new_docs.items()}
    subjects = {t: frozenset(row[0]) for t, row in base["docs"].items() if t not in gone}
    cidr_rules = {t: _cidr_rules(row[1]) for t, row in base["docs"].items() if t not in gone}
    for t, tr in translated.items():
        subjects[t] = partial.subjects(tr)
        cidr_rules[t] = partial.cidr_rules(tr)
    old_subjects = {t: frozenset(row[0]) for t, row in base["docs"].items()}
    old_rules = {t: _cidr_rules(row[1]) for t, row in base["docs"].items()}
    local = _local_identities(base)
    if _prefixes(cidr_rules) != _prefixes(old_rules):
        return None  # the cluster's CIDR identities change
    if _node_prefixes(local, cidr_rules) != _node_prefixes(local, old_rules):
        return None  # some node's ipcache changes
    affected = set().union(*(old_subjects[t] for t in gone), *(subjects[t] for t in translated))
    cookies = _cookies(base, gone, translated)
    if cookies is None:
        return None
    enforced = []
    for t in order:
        if not subjects[t] & affected:
            continue
        if t not in translated:
            doc = _reread(base, titles, t, read, audit_namespaces)
            if doc is None:
                return None
            translated[t] = translate(doc)
        enforced.append(translated[t])
    if any(needs_full_plan(r) for t in enforced for r in t.rules):
        return None
    classes = base["classes"]
    keys = [(row[0], row[1]) for row in classes]
    redo = [k for k in keys if k[0] in affected]
    made = partial.compile(enforced, redo, cookies)
    return _assemble(base, keys, made, cookies, {t: translated[t] for t in new_docs}, gone)


def with_live(state: NodeState, touched: Mapping[int, tuple[IPv4Address, EndpointEntry]],
              endpoints: Mapping[IPv4Address, EndpointEntry],
              maps: Mapping[int, FrozenMap[PolicyKey, PolicyEntry]]) -> NodeState:
    """A baseline node with what was read live of the `touched` endpoints: their endpoints-map
    entries (`endpoints`) and policy maps (`maps`; absent from either: none there)."""
    moved = {ip: endpoints.get(ip) for ip, entry in touched.values() if endpoints.get(ip) != entry}
    eps = patched(state.endpoints, moved)
    policies = dict(state.policies.items())
    for ep in touched:
        policies.pop(ep, None)
    policies.update(maps)
    return replace(state, endpoints=eps, policies=FrozenMap(policies))


def _universe(base: Mapping[str, Any]) -> ClusterSpec:
    """The spec a restored compiler reads: the mode (its universe comes from the baseline)."""
    nodes = tuple(base["node_order"])
    return ClusterSpec(base["cluster"], nodes, {}, (), (), base["mode"], base["ipv6_pass"])


def _local_identities(base: Mapping[str, Any]) -> dict[str, frozenset[int]]:
    return {n: frozenset(row[2] for row in node["endpoints"]) for n, node in base["nodes"].items()}


CidrRules = list[tuple[frozenset[int], frozenset[str]]]


def _cidr_rules(rows: Iterable[Any]) -> CidrRules:
    return [(frozenset(idents), frozenset(prefixes)) for idents, prefixes in rows]


def _prefixes(rules: Mapping[str, CidrRules]) -> frozenset[str]:
    return frozenset(p for rs in rules.values() for _, ps in rs for p in ps)


def _node_prefixes(local: Mapping[str, frozenset[int]],
                   rules: Mapping[str, CidrRules]) -> dict[str, frozenset[str]]:
    """node -> the CIDR prefixes of the rules selecting its pods (what its ipcache carries)."""
    flat = [r for rs in rules.values() for r in rs]
    return {node: frozenset(p for s, ps in flat if s & idents for p in ps) - {"0.0.0.0/0"}
            for node, idents in local.items()}


def _cookies(base: Mapping[str, Any], gone: set[str],
             translated: Mapping[str, Translated]) -> dict[RuleOrigin, int] | None:
    """Every origin's cookie after the edit, as assign_cookies over all of them gives it.

    assign_cookies rehashes an origin whose cookie is taken, in origin order. The origins of one
    policy collide by design (they differ in line only) and are rehashed among themselves; when
    no cookie of one policy meets another's (`salted` False at the baseline), each policy's
    cookies are its own assign_cookies', and an edited policy's new cookies must not meet any
    other's. None when they would: plan in full."""
    if base["salted"]:
        return None
    removed = {tuple(row) for t in gone for row in base["docs"][t][2]}
    cookies = {_origin(row): ck for row, ck in base["cookies"] if tuple(row) not in removed}
    used = set(cookies.values())
    for t in translated.values():
        for origin, cookie in assign_cookies(x.origin for x in (*t.rules, *t.isolations)).items():
            if cookie in used:
                return None
            used.add(cookie)
            cookies[origin] = cookie
    return cookies


def _reread(base: Mapping[str, Any], titles: Mapping[str, list[str]], title: str, read: Any,
            audit_namespaces: Iterable[str]) -> Document | None:
    rel = next(r for r, ts in titles.items() if title in ts)
    text = read(rel)
    docs = None if text is None else documents(rel, text, audit_namespaces)
    return next((d for d in docs or () if d.title == title), None)


def _assemble(base: Mapping[str, Any], keys: list[ClassKey], made: Mapping[ClassKey, ClassPolicy],
              cookies: Mapping[RuleOrigin, int], translated: Mapping[str, Translated],
              gone: set[str]) -> Replanned:
    classes = base["classes"]
    stub: list[FrozenMap[PolicyKey, PolicyEntry]] = []
    new: list[FrozenMap[PolicyKey, PolicyEntry]] = []
    flags: list[tuple[bool, bool]] = []
    warnings: list[CompileWarning] = []
    for key, row in zip(keys, classes, strict=True):
        known = KnownPolicyMap(row[2], row[3], frozenset(row[4]))
        stub.append(known)
        got = made.get(key)
        if got is None:
            new.append(known)
            flags.append((row[5], row[6]))
            warnings.extend(_warning(w) for w in (*row[7], *row[8]))
        else:
            m = got.made
            new.append(m.entries)
            flags.append((m.enforce_in, m.enforce_out))
            warnings.extend(m.warnings)
            warnings.extend(l7_warning(pair) for pair in m.ineffective_l7)
    for t, row in base["docs"].items():
        if t not in gone:
            warnings.extend(_warning(w) for w in row[3])
    for tr in translated.values():
        warnings.extend(tr.warnings)

    build = base["stamps"][0]
    intended: dict[str, NodeState] = {}
    baseline: dict[str, NodeState] = {}
    touched: dict[str, dict[int, tuple[IPv4Address, EndpointEntry]]] = {}
    endpoints_cat: dict[str, FrozenMap[int, str]] = {}
    shared = [FrozenMap({Direction(d): tuple(v) for d, v in by.items()}) for by in base["isolations"]]
    isolation = {pod: shared[i] for pod, i in base["isolation"].items()}
    ipcaches: dict[str, FrozenMap[IPv4Network, IpcacheEntry]] = {}
    for name in base["node_order"]:
        node = base["nodes"][name]
        ipcache = ipcaches.get(node["ipcache_text"])
        if ipcache is None:
            ipcache = ipcaches[node["ipcache_text"]] = _ipcache(node)
        rows = node["endpoints"]
        hit: dict[int, tuple[IPv4Address, EndpointEntry]] = {}
        flips: dict[int, tuple[bool, bool]] = {}  # endpoint id -> its new enforcement, when it moves
        for ip_int, ep, ident, enf_in, enf_out, cls, key in rows:
            if keys[cls] not in made:
                continue
            hit[ep] = (IPv4Address(ip_int), EndpointEntry(ep, ident, enf_in, enf_out))
            if flags[cls] != (enf_in, enf_out):
                flips[ep] = flags[cls]
            iso = made[keys[cls]].isolation
            if iso is None:
                isolation.pop(key, None)
            else:
                isolation[key] = iso
        by_id = sorted((row[1], row[5]) for row in rows)
        before = _endpoints(rows, node["endpoints_text"])
        after = patched(before, dict(_flipped(hit, flips)))
        config = DatapathConfig(ipv6_pass=node["config"])
        attachments = _attachments(rows, build)
        attachments_text(attachments, node["attachments_text"])
        baseline[name] = NodeState(name, config, ipcache, before,
                                   FrozenMap.from_sorted((ep, stub[c]) for ep, c in by_id), attachments)
        intended[name] = NodeState(name, config, ipcache, after,
                                   FrozenMap.from_sorted((ep, new[c]) for ep, c in by_id), attachments)
        touched[name] = hit
        endpoints_cat[name] = FrozenMap({row[1]: row[6] for row in rows})
    catalog = Catalog(
        identities=FrozenMap({i: IdentityInfo(i, tuple(ls), tuple(ps)) for i, ls, ps in base["identities"]}),
        endpoints=FrozenMap(endpoints_cat),
        cookies=FrozenMap({ck: o for o, ck in cookies.items()}),
        isolation=FrozenMap(isolation),
    )
    final = tuple(dict.fromkeys(sorted(set(warnings), key=str)))
    return Replanned(intended, baseline, catalog, final, touched, _Pods(base))


def _endpoints(rows: list[Any], text: str) -> FrozenMap[IPv4Address, EndpointEntry]:
    """A node's endpoints map from the baseline's rows (in address order), made on first read."""

    def make() -> tuple[tuple[IPv4Address, EndpointEntry], ...]:
        return tuple((IPv4Address(ip), EndpointEntry(ep, ident, enf_in, enf_out))
                     for ip, ep, ident, enf_in, enf_out, _c, _k in rows)

    return RowsMap(make, len(rows), text)


def _flipped(hit: Mapping[int, tuple[IPv4Address, EndpointEntry]],
             flips: Mapping[int, tuple[bool, bool]]) -> Iterator[tuple[IPv4Address, EndpointEntry]]:
    """The endpoints whose enforcement the edit moves, with their new entries."""
    for ep, (enforce_in, enforce_out) in flips.items():
        ip, entry = hit[ep]
        yield ip, replace(entry, enforce_ingress=enforce_in, enforce_egress=enforce_out)


def _attachments(rows: list[Any], build: str) -> frozenset[Attachment]:
    """A node's attachments (both hooks of every endpoint), made on first read."""

    def make() -> Iterator[Attachment]:
        return (Attachment(IPv4Address(row[0]), hook, build) for row in rows for hook in HOOKS)

    return RowsSet(make, len(rows) * len(HOOKS))  # type: ignore[return-value]  # read as a frozenset


class _Pods(Sequence[PodTarget]):
    """Every endpoint's pod as the plan names it (built only when the plan reads connections)."""

    def __init__(self, base: Mapping[str, Any]) -> None:
        self._base = base
        self._made: list[PodTarget] | None = None

    def _all(self) -> list[PodTarget]:
        if self._made is None:
            nodes = self._base["nodes"]
            self._made = [PodTarget(row[6], IPv4Address(row[0]))
                          for name in self._base["node_order"] for row in nodes[name]["endpoints"]]
        return self._made

    def __len__(self) -> int:
        return sum(len(self._base["nodes"][n]["endpoints"]) for n in self._base["node_order"])

    def __getitem__(self, i: Any) -> Any:
        return self._all()[i]


def _ipcache(node: Mapping[str, Any]) -> FrozenMap[IPv4Network, IpcacheEntry]:
    rows = node["ipcache"]

    def make() -> tuple[tuple[IPv4Network, IpcacheEntry], ...]:
        entries: dict[tuple[int, int], IpcacheEntry] = {}
        out = []
        for net, plen, ident, flags in rows:
            entry = entries.get((ident, flags))
            if entry is None:
                entry = entries[(ident, flags)] = IpcacheEntry(ident, flags)
            out.append((IPv4Network((net, plen)), entry))
        return tuple(out)

    return RowsMap(make, len(rows), node["ipcache_text"])
