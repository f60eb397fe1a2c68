"""Recompile only the endpoint classes a policy change selects, without the rest of the cluster.

An endpoint's policy (cluster._endpoint) is a function of its class (identity and container
ports), the universe (every identity with its labels and named ports, the cluster's CIDR
identities, the mode) and the rules that select its identity, with their cookies. A universe
holds one representative pod per class, which gives the compiler the same identities and named
ports as every pod would, so a class compiled here is the class the full compile makes. Like
Cilium regenerating only the endpoints a policy change selects.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass
from ipaddress import IPv4Network
from typing import Any

from meshctl.catalog import RuleOrigin
from meshctl.compile.cluster import (
    Compiled,
    NodeCidrs,
    _by_subject,
    _Compiler,
    _endpoint,
    _Inputs,
    _Memoized,
)
from meshctl.compile.documents import Document
from meshctl.compile.identities import IdentityTable
from meshctl.compile.ir import Rule, Translated
from meshctl.compile.selectors import SelectorIndex
from meshctl.compile.spec import ClusterSpec, PodSpec
from meshctl.nodestate import Direction, FrozenMap

ClassKey = tuple[int, tuple[Any, ...]]  # (identity, container ports sorted by str)


def class_of(identity: int, pod: PodSpec) -> ClassKey:
    return identity, tuple(sorted(pod.ports, key=str))


@dataclass(frozen=True)
class ClassPolicy:
    """One class's compiled policy, and the policies isolating it (the catalog names them)."""

    made: _Memoized
    isolation: FrozenMap[Direction, tuple[str, ...]] | None


class PartialCompiler:
    """The compiler's view of a universe, without its pods."""

    def __init__(self, compiler: _Compiler, cluster_cidrs: Mapping[IPv4Network, int]) -> None:
        self.c = compiler
        self.node_cidrs = NodeCidrs(cluster_cidrs)

    @classmethod
    def of(cls, spec: ClusterSpec, identities: IdentityTable,
           cluster_cidrs: Mapping[IPv4Network, int]) -> PartialCompiler:
        """The universe of `spec`'s pods (one per class is enough: universe_spec)."""
        return cls(_Compiler(spec, identities), cluster_cidrs)

    @classmethod
    def restored(cls, spec: ClusterSpec, identities: IdentityTable, cluster_cidrs: Mapping[IPv4Network, int],
                 parts: Mapping[str, Any]) -> PartialCompiler:
        """From `parts()` of the compiler of an equal universe (no label or index work)."""
        index = SelectorIndex.restored(parts["index"])
        return cls(_Compiler.restored(spec, identities, parts["cluster_ids"], index, parts["named"]),
                   cluster_cidrs)

    def parts(self) -> dict[str, Any]:
        """What `restored` needs, as plain values (marshal-able)."""
        c = self.c
        return {"cluster_ids": sorted(c.cluster_ids), "index": c.index.dump(), "named": c.named}

    def subjects(self, translated: Translated) -> frozenset[int]:
        """The identities a document's rules and isolations select (the endpoints it shapes)."""
        out: set[int] = set()
        for item in (*translated.rules, *translated.isolations):
            out |= self.c.index.select(item.subject)
        return frozenset(out)

    def cidr_rules(self, translated: Translated) -> list[tuple[frozenset[int], frozenset[str]]]:
        """(subject identities, CIDR prefixes) of each rule with CIDR peers: which prefixes the
        ipcache of a node holding those identities carries."""
        out = []
        for rule in translated.rules:
            prefixes = frozenset(str(p) for cr in rule.peers.cidrs for p in (cr.cidr, *cr.excepts))
            if prefixes:
                out.append((frozenset(self.c.index.select(rule.subject)), prefixes))
        return out

    def compile(self, enforced: Sequence[Translated], classes: Iterable[ClassKey],
                cookies: dict[RuleOrigin, int]) -> dict[ClassKey, ClassPolicy]:
        """`enforced`: the translations of every enforced document selecting these classes, in
        the order of the repo (a rule's place in its identity's list is what the compile sees)."""
        rules = [r for t in enforced for r in t.rules]
        isolations = [i for t in enforced for i in t.isolations]
        by_subject = _by_subject(self.c, rules)
        iso_by_subject = _by_subject(self.c, isolations)
        out: dict[ClassKey, ClassPolicy] = {}
        for key in classes:
            ident = key[0]
            inputs = _Inputs.of(by_subject.get(ident, []), iso_by_subject.get(ident, []), [], [], cookies)
            made = _endpoint(self.c, self.c.spec.mode, inputs, _ports_of(key), self.node_cidrs, cookies)
            isos = iso_by_subject.get(ident, [])
            isolation = None
            if isos and self.c.spec.mode == "default":
                per_dir = {d: tuple(sorted({i.policy for i in isos if i.direction == d}))
                           for d in (Direction.INGRESS, Direction.EGRESS)}
                isolation = FrozenMap({d: v for d, v in per_dir.items() if v})
            out[key] = ClassPolicy(made, isolation)
        return out


def needs_full_plan(rule: Rule) -> bool:
    """A rule a partial compile cannot redo: HTTP and DNS rules (the node's proxy rules are
    planned whole) and toFQDNs (world takes in every selector's identity: one policy's selectors shape the
    entries of others)."""
    return bool(rule.http or rule.dns is not None or rule.peers.fqdns)


def _ports_of(key: ClassKey) -> PodSpec:
    """All an endpoint's policy reads of its pod is the ports (named ingress ports): the class
    holds them."""
    return PodSpec("", "", {}, "", key[1])


def universe_spec(compiled: Compiled) -> ClusterSpec:
    """`compiled.spec` with one representative pod per class and no policies (pods without an
    address count: their named ports are part of the universe)."""
    spec = compiled.spec
    seen: dict[ClassKey, PodSpec] = {}
    for pod in spec.pods:
        seen.setdefault(class_of(compiled.pod_identity[pod.key], pod), pod)
    return ClusterSpec(spec.cluster, spec.nodes, spec.namespaces, tuple(seen.values()), (), spec.mode,
                       spec.ipv6_pass)


def translations(compiled: Compiled) -> list[tuple[Document, Translated]]:
    """Every document of `compiled` with its translation (from the compile's memo)."""
    from meshctl.compile.cluster import _doc_key
    from meshctl.compile.translate import translate

    known = compiled.memo.translations if compiled.memo is not None else {}
    return [(doc, known.get(_doc_key(doc)) or translate(doc)) for doc in compiled.spec.policies]


__all__ = ["ClassKey", "ClassPolicy", "PartialCompiler", "class_of", "needs_full_plan", "translations",
           "universe_spec"]
