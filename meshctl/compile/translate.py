"""Policy documents -> rule IR, exactly as Cilium translates them.

Kubernetes NetworkPolicy follows pkg/k8s/apis/cilium.io/... network_policy.go (policyTypes
defaulting, empty `from`/`to` = any peer, namespaceSelector {} = every pod namespace, TCP default,
ipBlock except); Cilium policies follow pkg/k8s/apis/cilium.io/utils/utils.go (selector scoping)
and api/rule.go (sections, enableDefaultDeny).
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from ipaddress import IPv4Network
from typing import Any

from meshctl.catalog import RuleOrigin
from meshctl.compile.documents import Document
from meshctl.compile.ir import (
    ENTITIES,
    CidrRule,
    CompileWarning,
    Isolation,
    Peers,
    PortSpec,
    Rule,
    Translated,
)
from meshctl.compile.labels import NAMESPACE_LABEL, NAMESPACE_LABELS_PREFIX
from meshctl.compile.selectors import Requirement, Selector, parse_selector
from meshctl.errors import CompileError
from meshctl.fqdnmatch import FqdnSelector
from meshctl.nodestate import PROTO_ICMP, PROTO_SCTP, PROTO_TCP, PROTO_UDP, Direction, HttpRule

PROTOCOLS = {"TCP": PROTO_TCP, "UDP": PROTO_UDP, "SCTP": PROTO_SCTP}
NS_EXISTS = Requirement("k8s", NAMESPACE_LABEL, "Exists")


def _ns_is(namespace: str) -> Requirement:
    return Requirement("k8s", NAMESPACE_LABEL, "In", (namespace,))


def _where(doc: Document, path: str) -> str:
    return f"{doc.source}: {path}" if doc.source else f"{doc.title} {path}"


def _cidr(doc: Document, text: Any, path: str) -> IPv4Network:
    try:
        return IPv4Network(str(text), strict=False)
    except ValueError as err:
        raise CompileError(f"{_where(doc, path)}: {text!r} is not an IPv4 CIDR") from err


def _replace_ns(sel: Selector, namespace: str) -> Selector:
    kept = tuple(r for r in sel.requirements if r.key != NAMESPACE_LABEL)
    return Selector(kept).with_requirement(_ns_is(namespace))


def _port_number(doc: Document, value: Any, path: str) -> int | str:
    if isinstance(value, int) and not isinstance(value, bool):
        number = value
    elif isinstance(value, str) and value.strip().isdigit():
        number = int(value)
    elif isinstance(value, str) and value:
        return value
    else:
        raise CompileError(f"{_where(doc, path)}: bad port {value!r}")
    if not 0 <= number <= 65535:
        raise CompileError(f"{_where(doc, path)}: port {number} out of 0..65535")
    return number


def _port_spec(doc: Document, proto: int, port: Any, end_port: Any, path: str) -> PortSpec:
    if port is None or port == 0 or port == "0":
        return PortSpec(proto)
    value = _port_number(doc, port, path + ".port")
    if isinstance(value, str):
        return PortSpec(proto, 0, 0, value)
    last = value
    if end_port not in (None, 0):
        end = _port_number(doc, end_port, path + ".endPort")
        if isinstance(end, str) or end < value:
            raise CompileError(f"{_where(doc, path)}: endPort {end_port!r} is below port {value}")
        last = end
    return PortSpec(proto, value, last)


class _Builder:
    def __init__(self, doc: Document) -> None:
        self.doc = doc
        self.rules: list[Rule] = []
        self.isolations: list[Isolation] = []
        self.warnings: list[CompileWarning] = []

    def origin(self, section: str, index: int, path: tuple[str | int, ...] = ()) -> RuleOrigin:
        """The rule's origin; `path` (e.g. ("spec", "ingress", 1)) names the rule's own line."""
        src = self.doc.source
        return RuleOrigin(
            self.doc.kind,
            self.doc.namespace,
            self.doc.name,
            section,
            index,
            src.file if src else "",
            src.line_of(path) if src else 0,
        )

    def warn(self, code: str, message: str) -> None:
        self.warnings.append(CompileWarning(code, f"{self.doc.title}: {message}", self.doc.source))

    def done(self) -> Translated:
        return Translated(tuple(self.rules), tuple(self.isolations), tuple(self.warnings))


# --- Kubernetes NetworkPolicy -------------------------------------------------------------


def _k8s_peer(doc: Document, peer: Mapping[str, Any], path: str) -> Peers:
    pod_sel = peer.get("podSelector")
    ns_sel = peer.get("namespaceSelector")
    if pod_sel is None and ns_sel is None:
        block = peer.get("ipBlock")
        if not block:
            raise CompileError(f"{_where(doc, path)}: a peer needs podSelector, namespaceSelector or ipBlock")
        excepts = tuple(_cidr(doc, e, f"{path}.ipBlock.except") for e in block.get("except") or ())
        return Peers(cidrs=(CidrRule(_cidr(doc, block.get("cidr"), f"{path}.ipBlock.cidr"), excepts),))
    sel = parse_selector(pod_sel, _where(doc, path + ".podSelector"))
    if ns_sel is not None:
        ns = parse_selector(ns_sel, _where(doc, path + ".namespaceSelector"))
        for req in ns.requirements:
            sel = sel.with_requirement(
                Requirement("k8s", NAMESPACE_LABELS_PREFIX + req.key, req.operator, req.values)
            )
        # pods only: a namespace selector never matches world or host, even through NotIn
        sel = sel.with_requirement(NS_EXISTS)
    else:
        sel = sel.with_requirement(_ns_is(doc.namespace))
    return Peers(selectors=(sel,))


def _k8s_ports(
    doc: Document, ports: Iterable[Mapping[str, Any]] | None, path: str
) -> tuple[PortSpec, ...] | None:
    if not ports:
        return None
    out = []
    for i, p in enumerate(ports):
        proto_name = str(p.get("protocol") or "TCP").upper()
        if proto_name not in PROTOCOLS:
            raise CompileError(f"{_where(doc, f'{path}[{i}].protocol')}: unknown protocol {proto_name!r}")
        out.append(_port_spec(doc, PROTOCOLS[proto_name], p.get("port"), p.get("endPort"), f"{path}[{i}]"))
    return tuple(out)


def translate_k8s(doc: Document) -> Translated:
    b = _Builder(doc)
    spec = doc.body.get("spec") or {}
    subject = _replace_ns(
        parse_selector(spec.get("podSelector"), _where(doc, "spec.podSelector")), doc.namespace
    )
    types = spec.get("policyTypes")
    if not types:
        types = ["Ingress", *(["Egress"] if spec.get("egress") else [])]
    for direction, section, peer_key in (
        (Direction.INGRESS, "ingress", "from"),
        (Direction.EGRESS, "egress", "to"),
    ):
        if section.capitalize() not in types:
            continue
        b.isolations.append(
            Isolation(doc.title, subject, direction, True, b.origin(section, 0, ("spec", section)))
        )
        for i, rule in enumerate(spec.get(section) or ()):
            path = f"spec.{section}[{i}]"
            peer_docs = rule.get(peer_key) or ()
            if not peer_docs:
                peers = Peers(wildcard=True)
            else:
                parts = [_k8s_peer(doc, p, f"{path}.{peer_key}[{j}]") for j, p in enumerate(peer_docs)]
                peers = Peers(
                    selectors=tuple(s for p in parts for s in p.selectors),
                    cidrs=tuple(c for p in parts for c in p.cidrs),
                )
            ports = _k8s_ports(doc, rule.get("ports"), f"{path}.ports")
            b.rules.append(
                Rule(b.origin(section, i, ("spec", section, i)), subject, direction, False, peers, ports)
            )
    return b.done()


# --- Cilium policies ----------------------------------------------------------------------

_PEER_KEYS = {
    Direction.INGRESS: (
        "fromEndpoints",
        "fromEntities",
        "fromCIDR",
        "fromCIDRSet",
        "fromRequires",
        "fromNodes",
        "fromGroups",
    ),
    Direction.EGRESS: (
        "toEndpoints",
        "toEntities",
        "toCIDR",
        "toCIDRSet",
        "toRequires",
        "toNodes",
        "toGroups",
        "toServices",
        "toFQDNs",
    ),
}


def _scoped(doc: Document, raw: Mapping[str, Any] | None, path: str) -> Selector:
    """Cilium's getEndpointSelector: limit a peer selector to the policy's namespace."""
    sel = parse_selector(raw, _where(doc, path))
    if any(r.source == "reserved" for r in sel.requirements):
        return sel
    if sel.has_key("k8s", NAMESPACE_LABEL):
        return sel
    if not doc.namespace:
        if sel.has_key("reserved", "init"):
            return sel
        return sel.with_requirement(NS_EXISTS)
    if sel.has_key_prefix(NAMESPACE_LABELS_PREFIX):
        return sel
    return sel.with_requirement(_ns_is(doc.namespace))


# A toPorts item with L7 rules, a rule of its own (the node's proxy judges those ports): its ports,
# and its HTTP rules or its DNS names
L7Part = tuple[tuple[PortSpec, ...], tuple[HttpRule, ...] | None, tuple[FqdnSelector, ...] | None]


def _http_rule(raw: Mapping[str, Any]) -> HttpRule:
    """Cilium's PortRuleHTTP as the proxy matches it; a header "Name: value" (or "Name value")
    must have that value, a bare "Name" must be present (Cilium's getHTTPRule)."""
    headers = []
    for h in raw.get("headers") or ():
        name, _, value = str(h).partition(" ")
        headers.append(f"{name.rstrip(':')}: {value}" if value else name.rstrip(":"))
    matches = tuple((str(m["name"]), str(m.get("value") or "")) for m in raw.get("headerMatches") or ())
    return HttpRule(str(raw.get("method") or ""), str(raw.get("path") or ""), str(raw.get("host") or ""),
                    tuple(headers), matches)


def _l7_ports(b: _Builder, tp: Mapping[str, Any], path: str, dns: bool) -> tuple[PortSpec, ...]:
    """The ports of a toPorts item with L7 rules: HTTP on TCP only (Cilium: ANY means TCP), DNS
    on UDP and TCP (ANY means both)."""
    allowed = {"TCP": (PROTO_TCP,), "UDP": (PROTO_UDP,), "ANY": (PROTO_UDP, PROTO_TCP)} if dns else {
        "TCP": (PROTO_TCP,), "ANY": (PROTO_TCP,)}
    specs = []
    for j, p in enumerate(tp.get("ports") or ()):
        ppath = f"{path}.ports[{j}]"
        proto_name = str(p.get("protocol") or "ANY").upper()
        if proto_name not in allowed:
            what = "DNS rules apply to UDP and TCP ports" if dns else "HTTP rules apply to TCP ports"
            raise CompileError(f"{_where(b.doc, ppath + '.protocol')}: {what} only")
        specs += [_port_spec(b.doc, proto, p.get("port"), p.get("endPort"), ppath)
                  for proto in allowed[proto_name]]
    return tuple(specs) or tuple(PortSpec(proto) for proto in allowed["ANY"])


def _fqdn_selectors(raw: Any) -> tuple[FqdnSelector, ...]:
    return tuple(sorted({FqdnSelector.of(r.get("matchName"), r.get("matchPattern")) for r in raw or ()}))


def _cilium_ports(
    b: _Builder, rule: Mapping[str, Any], path: str, deny: bool
) -> tuple[tuple[PortSpec, ...] | None, str, list[L7Part]]:
    """Plain ports (None = any protocol), a description of the L7 rules, and the toPorts items
    with HTTP or DNS rules (each becomes its own rule: the node's proxy judges those ports)."""
    to_ports = rule.get("toPorts")
    icmps = rule.get("icmps")
    if to_ports is None and icmps is None:
        return None, "", []
    specs: list[PortSpec] = []
    l7: list[str] = []
    parts: list[L7Part] = []
    for i, tp in enumerate(to_ports or ()):
        tpath = f"{path}.toPorts[{i}]"
        rules = tp.get("rules") or {}
        if rules.get("http") or rules.get("dns"):
            dns = bool(rules.get("dns"))
            ports = _l7_ports(b, tp, tpath, dns)
            parts.append((ports, None if dns else tuple(_http_rule(r or {}) for r in rules["http"]),
                          _fqdn_selectors(rules["dns"]) if dns else None))
            l7.append(f"{'dns' if dns else 'http'} on {','.join(str(s) for s in ports)}")
            continue
        ports = tp.get("ports") or [{}]
        for j, p in enumerate(ports):
            proto_name = str(p.get("protocol") or "ANY").upper()
            ppath = f"{tpath}.ports[{j}]"
            if proto_name == "ANY":
                protos = [PROTO_TCP, PROTO_UDP, PROTO_SCTP]
            elif proto_name in PROTOCOLS:
                protos = [PROTOCOLS[proto_name]]
            else:
                raise CompileError(f"{_where(b.doc, ppath + '.protocol')}: unknown protocol {proto_name!r}")
            for proto in protos:
                specs.append(_port_spec(b.doc, proto, p.get("port"), p.get("endPort"), ppath))
    if icmps:
        specs.append(PortSpec(PROTO_ICMP))
        b.warn(
            "unsupported",
            f"{path}.icmps: ICMP types are not matched yet: all ICMP is {'denied' if deny else 'allowed'}",
        )
    return tuple(sorted(set(specs))), "; ".join(l7), parts


def _cilium_peers(b: _Builder, direction: Direction, rule: Mapping[str, Any], path: str) -> Peers | None:
    present = [k for k in _PEER_KEYS[direction] if k in rule and rule[k] is not None]
    if not present:
        return None
    selectors: list[Selector] = []
    entities: list[str] = []
    cidrs: list[CidrRule] = []
    ep_key, ent_key, cidr_key, set_key = _PEER_KEYS[direction][:4]
    for j, raw in enumerate(rule.get(ep_key) or ()):
        selectors.append(_scoped(b.doc, raw, f"{path}.{ep_key}[{j}]"))
    for j, ent in enumerate(rule.get(ent_key) or ()):
        if ent not in ENTITIES:
            raise CompileError(f"{_where(b.doc, f'{path}.{ent_key}[{j}]')}: unknown entity {ent!r}")
        entities.append(str(ent))
    for j, c in enumerate(rule.get(cidr_key) or ()):
        cidrs.append(CidrRule(_cidr(b.doc, c, f"{path}.{cidr_key}[{j}]")))
    for j, cs in enumerate(rule.get(set_key) or ()):
        if cs.get("cidr") is None:
            b.warn("unsupported", f"{path}.{set_key}[{j}]: only `cidr` is supported (cidrGroupRef ignored)")
            continue
        excepts = tuple(_cidr(b.doc, e, f"{path}.{set_key}[{j}].except") for e in cs.get("except") or ())
        cidrs.append(CidrRule(_cidr(b.doc, cs["cidr"], f"{path}.{set_key}[{j}].cidr"), excepts))
    fqdns = _fqdn_selectors(rule.get("toFQDNs"))
    for sel in fqdns:
        if sel.selects_everything:
            b.warn("fqdn-wildcard", f"{path}.toFQDNs: `matchPattern: \"*\"` selects every IP any DNS answer "
                   "brings (one more identity per learned name set): to allow all of the outside, write "
                   "`toEntities: [world]`")
    for key in _PEER_KEYS[direction][4:]:
        if rule.get(key) and key != "toFQDNs":
            b.warn("unsupported", f"{path}.{key}: {key} is not supported: ignored")
    return Peers(False, tuple(sorted(set(selectors))), tuple(sorted(set(entities))),
                 tuple(sorted(set(cidrs))), fqdns)


def _cilium_spec(b: _Builder, spec: Mapping[str, Any], prefix: str, at: tuple[str | int, ...]) -> None:
    doc = b.doc
    if spec.get("endpointSelector") is None:
        if spec.get("nodeSelector") is not None:
            b.warn("unsupported", f"{prefix}nodeSelector: host policies are not supported: ignored")
            return
        raise CompileError(f"{_where(doc, prefix + 'endpointSelector')}: a rule needs an endpointSelector")
    subject = parse_selector(spec.get("endpointSelector"), _where(doc, prefix + "endpointSelector"))
    if doc.namespace:
        subject = _replace_ns(subject, doc.namespace)
    default_deny = spec.get("enableDefaultDeny") or {}
    for direction, allow_key, deny_key in (
        (Direction.INGRESS, "ingress", "ingressDeny"),
        (Direction.EGRESS, "egress", "egressDeny"),
    ):
        enforced = False
        first: tuple[str, int] | None = None
        for section, deny in ((allow_key, False), (deny_key, True)):
            rules = spec.get(section)
            if rules is not None and len(rules) == 0:
                b.warn(
                    "empty-section",
                    f"{prefix}{section}: `{section}: []` enforces nothing; did you mean `{section}: [{{}}]`?",
                )
            for i, rule in enumerate(rules or ()):
                enforced = True
                first = first or (section, i)
                path = f"{prefix}{section}[{i}]"
                peers = _cilium_peers(b, direction, rule or {}, path)
                ports, l7, parts = _cilium_ports(b, rule or {}, path, deny)
                if peers is None:
                    peers = Peers(wildcard=True) if ports is not None else Peers()
                origin = b.origin(prefix + section, i, (*at, section, i))
                if ports or not parts:  # L7 ports are rules of their own: the proxy judges them
                    b.rules.append(Rule(origin, subject, direction, deny, peers, ports, l7))
                b.rules.extend(Rule(origin, subject, direction, deny, peers, p, l7, http, dns)
                               for p, http, dns in parts)
        if enforced and first:
            dd = default_deny.get(direction.label)
            b.isolations.append(
                Isolation(
                    doc.title,
                    subject,
                    direction,
                    dd is None or bool(dd),
                    b.origin(prefix + first[0], first[1], (*at, *first)),
                )
            )


def translate_cilium(doc: Document) -> Translated:
    b = _Builder(doc)
    specs: list[tuple[Mapping[str, Any], str, tuple[str | int, ...]]] = []
    if doc.body.get("spec"):
        specs.append((doc.body["spec"], "", ("spec",)))
    for i, s in enumerate(doc.body.get("specs") or ()):
        specs.append((s, f"specs[{i}].", ("specs", i)))
    for spec, prefix, at in specs:
        _cilium_spec(b, spec, prefix, at)
    return b.done()


def translate(doc: Document) -> Translated:
    if doc.kind == "NetworkPolicy":
        return translate_k8s(doc)
    if doc.kind in ("CiliumNetworkPolicy", "CiliumClusterwideNetworkPolicy"):
        return translate_cilium(doc)
    raise CompileError(f"{doc.source or doc.title}: unsupported policy kind {doc.kind!r}")
