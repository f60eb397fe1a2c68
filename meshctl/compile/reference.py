"""The reference evaluator: policy rules read literally, one connection at a time.

No identities, no policy entries, no LPM: every rule of every document is evaluated against the
concrete source, destination, port and protocol, straight from the written semantics of
Kubernetes NetworkPolicy and Cilium's CiliumNetworkPolicy / CiliumClusterwideNetworkPolicy.
It is slow and meant to be obviously correct: the property tests check the compiler (looked up
through meshctl.verdicts) against it.

Rules encoded here (Cilium's, where Kubernetes leaves a choice):
- deny beats allow; a direction is enforced when a selecting rule has a non-empty allow or deny
  section; it is default-deny unless every such rule sets enableDefaultDeny false
  (policyEnforcementMode always: both directions default-deny; never: nothing enforced);
- Cilium peer selectors are scoped to the policy's namespace unless they name the namespace,
  namespace labels or a reserved label; cluster-wide policies scope them to pods;
- entities: all = anything, cluster = every pod, world = every address outside the cluster;
- CIDR peers never match pods; a rule with toPorts and no peer matches every peer;
- Cilium protocol ANY = TCP, UDP and SCTP; Kubernetes' default protocol is TCP;
- named ports resolve on the destination: on ingress the pod's own ports, on egress the ports
  of the destination's identity (all pods with its labels; a name with two numbers matches
  nothing, as in Cilium).
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from ipaddress import IPv4Address, IPv4Network
from typing import Any

from meshctl.compile.documents import Document
from meshctl.compile.labels import (
    CLUSTER_LABEL,
    NAMESPACE_LABEL,
    NAMESPACE_LABELS_PREFIX,
    SOURCES,
    is_identity_relevant,
)
from meshctl.compile.spec import ClusterSpec, PodSpec
from meshctl.nodestate import PROTO_SCTP, PROTO_TCP, PROTO_UDP, Direction

Labels = dict[tuple[str, str], str]  # (source, key) -> value
Peer = PodSpec | IPv4Address
PROTOCOLS = {"TCP": PROTO_TCP, "UDP": PROTO_UDP, "SCTP": PROTO_SCTP}
WORLD_LABELS: Labels = {("reserved", "world"): ""}


# --- labels and selectors -----------------------------------------------------------------


def pod_labels(spec: ClusterSpec, pod: PodSpec) -> Labels:
    """The labels Cilium gives a pod's endpoint (only identity-relevant pod labels count)."""
    out: Labels = {("k8s", k): str(v) for k, v in pod.labels.items() if is_identity_relevant(k)}
    out["k8s", NAMESPACE_LABEL] = pod.namespace
    for k, v in spec.namespace_labels(pod.namespace).items():
        out["k8s", NAMESPACE_LABELS_PREFIX + k] = str(v)
    if spec.cluster:
        out["k8s", CLUSTER_LABEL] = spec.cluster
    return out


def _split_key(key: str) -> tuple[str, str]:
    source, sep, rest = key.partition(":")
    return (source, rest) if sep and source in SOURCES else ("any", key)


def _values(labels: Labels, key: str) -> set[str]:
    source, k = _split_key(key)
    return {v for (s, lk), v in labels.items() if lk == k and source in ("any", s)}


def selector_matches(sel: Mapping[str, Any] | None, labels: Labels) -> bool:
    """A Kubernetes LabelSelector over one label set; empty or missing selects everything."""
    sel = sel or {}
    for key, value in (sel.get("matchLabels") or {}).items():
        if ("" if value is None else str(value)) not in _values(labels, str(key)):
            return False
    for expr in sel.get("matchExpressions") or ():
        have = _values(labels, str(expr["key"]))
        want = {str(v) for v in expr.get("values") or ()}
        op = expr["operator"]
        if (
            (op == "In" and not have & want)
            or (op == "NotIn" and have & want)
            or (op == "Exists" and not have)
            or (op == "DoesNotExist" and have)
        ):
            return False
    return True


def _selector_keys(sel: Mapping[str, Any] | None) -> list[tuple[str, str]]:
    sel = sel or {}
    keys = [str(k) for k in sel.get("matchLabels") or {}]
    keys += [str(e["key"]) for e in sel.get("matchExpressions") or ()]
    return [_split_key(k) for k in keys]


# --- the evaluator ------------------------------------------------------------------------


class Reference:
    """Evaluates connections over one ClusterSpec (label sets computed once per pod)."""

    def __init__(self, spec: ClusterSpec) -> None:
        self.spec = spec
        self.pods = {p.key: p for p in spec.pods}
        self.by_ip = {p.ip: p for p in spec.pods if p.ip is not None}
        self.labels = {p.key: pod_labels(spec, p) for p in spec.pods}

    # peers ---------------------------------------------------------------------------------

    def resolve(self, ref: str | IPv4Address) -> Peer:
        """`ns/pod` or an address; the address of a pod is that pod."""
        if isinstance(ref, str) and ref in self.pods:
            return self.pods[ref]
        addr = IPv4Address(ref)
        return self.by_ip.get(addr, addr)

    def _labels_of(self, peer: Peer) -> Labels:
        return self.labels[peer.key] if isinstance(peer, PodSpec) else WORLD_LABELS

    def _cilium_selects(self, doc: Document, raw: Mapping[str, Any] | None, peer: Peer) -> bool:
        labels = self._labels_of(peer)
        if not selector_matches(raw, labels):
            return False
        keys = _selector_keys(raw)
        if any(s == "reserved" for s, _ in keys):
            return True
        if any(k == NAMESPACE_LABEL and s in ("k8s", "any") for s, k in keys):
            return True
        if not doc.namespace:  # cluster-wide: pods of any namespace
            return isinstance(peer, PodSpec)
        if any(k.startswith(NAMESPACE_LABELS_PREFIX) for _, k in keys):
            return True
        return isinstance(peer, PodSpec) and peer.namespace == doc.namespace

    @staticmethod
    def _in_cidr(peer: Peer, cidr: Any, excepts: Iterable[Any] = ()) -> bool:
        if isinstance(peer, PodSpec):  # CIDR rules never match cluster endpoints
            return False
        if peer not in IPv4Network(str(cidr), strict=False):
            return False
        return not any(peer in IPv4Network(str(e), strict=False) for e in excepts)

    # ports ---------------------------------------------------------------------------------

    def _named(self, name: str, proto: int, local: PodSpec, peer: Peer, direction: Direction) -> set[int]:
        """Numbers a named port means on the destination of this connection."""
        if direction == Direction.INGRESS:
            own = {(n, PROTOCOLS.get(p.upper())): num for n, num, p in local.ports if n}
            return {own[(name, proto)]} if (name, proto) in own else set()
        if not isinstance(peer, PodSpec):
            return set()
        ident = self.labels[peer.key]
        numbers = {
            num
            for p in self.spec.pods
            if self.labels[p.key] == ident
            for n, num, pr in p.ports
            if n == name and PROTOCOLS.get(pr.upper()) == proto
        }
        return numbers if len(numbers) == 1 else set()

    def _port_matches(
        self, protos: Iterable[int], item: Mapping[str, Any], q: tuple[int, int],
        local: PodSpec, peer: Peer, direction: Direction,
    ) -> bool:
        proto, port = q
        if proto not in protos:
            return False
        value = item.get("port")
        if value in (None, 0, "0"):
            return True
        if isinstance(value, str) and not value.strip().isdigit():
            return port in self._named(value, proto, local, peer, direction)
        first = int(value)
        end = item.get("endPort")
        last = int(end) if end not in (None, 0) else first
        return first <= port <= last

    # Kubernetes NetworkPolicy ---------------------------------------------------------------

    def _k8s(self, doc: Document, pod: PodSpec, direction: Direction) -> list[tuple[bool, list[Any]]]:
        """[(default_deny, allow rules)] when this policy isolates `pod` in `direction`."""
        spec = doc.body.get("spec") or {}
        if pod.namespace != doc.namespace or not selector_matches(
            spec.get("podSelector"), self.labels[pod.key]
        ):
            return []
        types = spec.get("policyTypes") or ["Ingress", *(["Egress"] if spec.get("egress") else [])]
        section = direction.label
        if section.capitalize() not in types:
            return []
        return [(True, [("k8s", doc, r) for r in spec.get(section) or ()])]

    def _k8s_rule(
        self, doc: Document, rule: Mapping[str, Any], local: PodSpec, peer: Peer, direction: Direction,
        q: tuple[int, int],
    ) -> bool:
        peers = rule.get("from" if direction == Direction.INGRESS else "to") or ()
        if peers and not any(self._k8s_peer(doc, p, peer) for p in peers):
            return False
        ports = rule.get("ports") or ()
        if not ports:
            return True
        return any(
            self._port_matches(
                (PROTOCOLS[str(p.get("protocol") or "TCP").upper()],), p, q, local, peer, direction
            )
            for p in ports
        )

    def _k8s_peer(self, doc: Document, item: Mapping[str, Any], peer: Peer) -> bool:
        pod_sel, ns_sel = item.get("podSelector"), item.get("namespaceSelector")
        if pod_sel is None and ns_sel is None:
            block = item["ipBlock"]
            return self._in_cidr(peer, block["cidr"], block.get("except") or ())
        if not isinstance(peer, PodSpec):
            return False
        if ns_sel is None:
            if peer.namespace != doc.namespace:
                return False
        else:
            ns_labels: Labels = {
                ("k8s", k): str(v) for k, v in self.spec.namespace_labels(peer.namespace).items()
            }
            if not selector_matches(ns_sel, ns_labels):
                return False
        return selector_matches(pod_sel, self.labels[peer.key])

    # Cilium policies ------------------------------------------------------------------------

    def _cilium(self, doc: Document, pod: PodSpec, direction: Direction) -> list[tuple[bool, list[Any]]]:
        specs = [doc.body["spec"]] if doc.body.get("spec") else []
        specs += list(doc.body.get("specs") or ())
        allow_key = direction.label
        deny_key = allow_key + "Deny"
        out = []
        for spec in specs:
            if doc.namespace and pod.namespace != doc.namespace:
                continue
            if spec.get("endpointSelector") is None or not selector_matches(
                spec["endpointSelector"], self.labels[pod.key]
            ):
                continue
            allow = list(spec.get(allow_key) or ())
            deny = list(spec.get(deny_key) or ())
            if not allow and not deny:
                continue
            dd = (spec.get("enableDefaultDeny") or {}).get(allow_key)
            rules = [("cilium", doc, r or {}) for r in allow]
            rules += [("cilium-deny", doc, r or {}) for r in deny]
            out.append((dd is None or bool(dd), rules))
        return out

    def _cilium_rule(
        self, doc: Document, rule: Mapping[str, Any], local: PodSpec, peer: Peer, direction: Direction,
        q: tuple[int, int],
    ) -> bool:
        pre = "from" if direction == Direction.INGRESS else "to"
        peer_keys = [pre + k for k in ("Endpoints", "Entities", "CIDR", "CIDRSet", "Requires", "Nodes",
                                       "Groups", "Services", "FQDNs")]
        has_peers = any(rule.get(k) is not None for k in peer_keys)
        to_ports = rule.get("toPorts")
        if has_peers:
            if not self._cilium_peer(doc, rule, pre, peer):
                return False
        elif to_ports is None:
            return False  # `{}`: selects the endpoint for default deny, allows nothing
        if to_ports is None:
            return True
        for tp in to_ports:
            for item in tp.get("ports") or [{}]:
                name = str(item.get("protocol") or "ANY").upper()
                protos = (PROTO_TCP, PROTO_UDP, PROTO_SCTP) if name == "ANY" else (PROTOCOLS[name],)
                if (tp.get("rules") or {}).get("http"):  # Cilium: HTTP rules make ANY mean TCP
                    protos = (PROTO_TCP,)
                if self._port_matches(protos, item, q, local, peer, direction):
                    return True
        return False

    def _cilium_peer(self, doc: Document, rule: Mapping[str, Any], pre: str, peer: Peer) -> bool:
        if any(self._cilium_selects(doc, s, peer) for s in rule.get(pre + "Endpoints") or ()):
            return True
        for ent in rule.get(pre + "Entities") or ():
            if ent == "all":
                return True
            if ent == "cluster" and isinstance(peer, PodSpec):
                return True
            if ent in ("world", "world-ipv4") and not isinstance(peer, PodSpec):
                return True
        if any(self._in_cidr(peer, c) for c in rule.get(pre + "CIDR") or ()):
            return True
        return any(
            cs.get("cidr") is not None and self._in_cidr(peer, cs["cidr"], cs.get("except") or ())
            for cs in rule.get(pre + "CIDRSet") or ()
        )

    # verdicts ------------------------------------------------------------------------------

    def allowed(self, local: PodSpec, direction: Direction, peer: Peer, protocol: int, port: int) -> bool:
        """Does `local` let this connection pass in `direction` (peer = the other end)?"""
        mode = self.spec.mode
        if mode == "never":
            return True
        sections: list[tuple[bool, list[Any]]] = []
        for doc in self.spec.policies:
            if doc.kind == "NetworkPolicy":
                sections += self._k8s(doc, local, direction)
            else:
                sections += self._cilium(doc, local, direction)
        q = (protocol, port)
        rules = [r for _, rs in sections for r in rs]

        def hit(kind: str, doc: Document, rule: Mapping[str, Any]) -> bool:
            if kind == "k8s":
                return self._k8s_rule(doc, rule, local, peer, direction, q)
            return self._cilium_rule(doc, rule, local, peer, direction, q)

        if any(hit(*r) for r in rules if r[0] == "cilium-deny"):
            return False
        if any(hit(*r) for r in rules if r[0] != "cilium-deny"):
            return True
        if mode == "always":
            return False
        return not any(dd for dd, _ in sections)

    def verdict(self, src: str | IPv4Address, dst: str | IPv4Address, port: int, protocol: int) -> bool:
        """Egress at the source pod (if it is one) and ingress at the destination pod."""
        s, d = self.resolve(src), self.resolve(dst)
        if isinstance(s, PodSpec) and not self.allowed(s, Direction.EGRESS, d, protocol, port):
            return False
        return not (isinstance(d, PodSpec) and not self.allowed(d, Direction.INGRESS, s, protocol, port))


def verdict(
    desired: ClusterSpec | Any, src: str | IPv4Address, dst: str | IPv4Address, port: int, protocol: int
) -> bool:
    """One connection's verdict from a ClusterSpec or a loaded DesiredState."""
    if not isinstance(desired, ClusterSpec):
        from meshctl.compile.spec import spec_from_desired

        desired = spec_from_desired(desired)
    return Reference(desired).verdict(src, dst, port, protocol)
