"""cilium.io/v2 CiliumNetworkPolicy and CiliumClusterwideNetworkPolicy (pkg/policy/api).

Field names follow Cilium's rule.go, ingress.go, egress.go, l4.go, cidr.go, fqdn.go. Omitted
lists are None and written-empty lists are (): Cilium treats `ingress: []` as "does not apply",
and plan/trace must be able to warn about it. HTTP rules (`rules.http`) are enforced by the
node's L7 proxy; `toFQDNs` selects the identities of the IPs learned for its names, and names
and patterns are checked as Cilium checks them (meshctl.fqdnmatch). Cilium fields meshctl does
not implement are recognised and rejected by name instead of being silently dropped.
"""

from __future__ import annotations

import re
from collections.abc import Callable
from typing import Annotated, Any, Literal

from pydantic import AfterValidator, BeforeValidator, Field, StrictBool, field_validator, model_validator

from meshctl.fqdnmatch import name_error, pattern_error
from meshctl.model.base import Model, SourceRef, source_field
from meshctl.model.cidr import CiliumCidr, check_excepts
from meshctl.model.meta import IGNORED, ObjectMeta, default_namespace
from meshctl.model.ports import CiliumPort, EndPort, check_range
from meshctl.model.selector import EndpointSelector

# pkg/policy/api/entity.go, the entities meshctl compiles.
ENTITIES = (
    "all", "world", "cluster", "host", "remote-node", "kube-apiserver",
    "health", "init", "ingress", "unmanaged", "none",
)  # fmt: skip
DNS_ENTITY_HINT = (
    "'dns' is not a Cilium entity. Allow DNS with toEndpoints selecting "
    "{k8s:io.kubernetes.pod.namespace: kube-system, k8s-app: kube-dns} and toPorts 53/UDP (and 53/TCP)"
)


def _entity(value: Any) -> Any:
    if value == "dns":
        raise ValueError(DNS_ENTITY_HINT)
    if value not in ENTITIES:
        raise ValueError(f"{value!r} is not a Cilium entity; expected one of {', '.join(ENTITIES)}")
    return value


Entity = Annotated[str, BeforeValidator(_entity)]
CiliumProtocol = Literal["TCP", "UDP", "SCTP", "ANY"]


def _reject(value: Any) -> Any:
    raise ValueError("this Cilium field is not supported by meshctl; remove it or rewrite the rule")


# A Cilium field we recognise but do not implement: an error naming it, never a silent drop.
Unsupported = Annotated[Any, AfterValidator(_reject)]


def unsupported(alias: str) -> Any:
    return Field(default=None, alias=alias, exclude=True, repr=False)


class CIDRRule(Model):
    """fromCIDRSet/toCIDRSet entry: a prefix minus `except` prefixes."""

    cidr: CiliumCidr
    except_: tuple[CiliumCidr, ...] | None = Field(default=None, alias="except")
    cidr_group_ref: Unsupported = unsupported("cidrGroupRef")

    @model_validator(mode="after")
    def _inside(self) -> CIDRRule:
        check_excepts(self.cidr, self.except_)
        return self


class PortProtocol(Model):
    """port: number (0 = every port) or named port; protocol ANY by default, as in Cilium."""

    port: CiliumPort = 0
    end_port: EndPort = None
    protocol: CiliumProtocol = "ANY"

    @model_validator(mode="after")
    def _range(self) -> PortProtocol:
        check_range(self.port, self.end_port)
        return self


def _regex(value: str | None) -> str | None:
    """Cilium's method, path and host are extended POSIX regexes; Envoy runs them as RE2. Both
    reject what Python's re rejects here; Envoy's validation at plan time catches the rest."""
    if value is not None:
        try:
            re.compile(value)
        except re.error as err:
            raise ValueError(f"invalid regular expression {value!r}: {err}") from None
    return value


Regex = Annotated[str | None, AfterValidator(_regex)]


class HeaderMatch(Model):
    """headerMatches[]: the header must have exactly `value` (or be present without one).
    Only the default mismatch action (deny the request) is supported."""

    name: str = Field(min_length=1)
    value: str | None = None
    mismatch: Unsupported = unsupported("mismatch")
    secret: Unsupported = unsupported("secret")


class PortRuleHTTP(Model):
    """An HTTP request matcher (Cilium's PortRuleHTTP), enforced by the node's L7 proxy."""

    path: Regex = None
    method: Regex = None
    host: Regex = None
    headers: tuple[str, ...] | None = None
    header_matches: tuple[HeaderMatch, ...] | None = None


def _checked(check: Callable[[str], str | None]) -> Callable[[Any], Any]:
    def validate(value: Any) -> Any:
        if isinstance(value, str) and (error := check(value)):
            raise ValueError(error)
        return value

    return validate


class PortRuleDNS(Model):
    """A DNS name matcher (Cilium's FQDNSelector; meshctl.fqdnmatch judges names): exactly one of
    matchName and matchPattern."""

    match_name: Annotated[str | None, AfterValidator(_checked(name_error))] = None
    match_pattern: Annotated[str | None, AfterValidator(_checked(pattern_error))] = None

    @model_validator(mode="after")
    def _one(self) -> PortRuleDNS:
        if (self.match_name is None) == (self.match_pattern is None):
            raise ValueError("set exactly one of matchName and matchPattern")
        return self


FQDNSelector = PortRuleDNS


class L7Rules(Model):
    http: tuple[PortRuleHTTP, ...] | None = None
    dns: tuple[PortRuleDNS, ...] | None = None
    kafka: Unsupported = unsupported("kafka")
    l7proto: Unsupported = unsupported("l7proto")
    l7: Unsupported = unsupported("l7")

    @model_validator(mode="after")
    def _one_kind(self) -> L7Rules:
        if self.http and self.dns:
            raise ValueError("rules may hold http or dns rules, not both")
        return self


class PortRule(Model):
    ports: tuple[PortProtocol, ...] | None = None
    rules: L7Rules | None = None
    terminating_tls: Unsupported = unsupported("terminatingTLS")
    originating_tls: Unsupported = unsupported("originatingTLS")
    server_names: Unsupported = unsupported("serverNames")
    listener: Unsupported = unsupported("listener")

    @property
    def has_l7(self) -> bool:
        return self.rules is not None and bool(self.rules.http or self.rules.dns)


class PortDenyRule(Model):
    """toPorts of a deny rule: L4 only."""

    ports: tuple[PortProtocol, ...] | None = None


class _IngressPeers(Model):
    from_endpoints: tuple[EndpointSelector, ...] | None = None
    from_cidr: tuple[CiliumCidr, ...] | None = Field(default=None, alias="fromCIDR")
    from_cidr_set: tuple[CIDRRule, ...] | None = Field(default=None, alias="fromCIDRSet")
    from_entities: tuple[Entity, ...] | None = None
    from_requires: Unsupported = unsupported("fromRequires")
    from_groups: Unsupported = unsupported("fromGroups")
    from_nodes: Unsupported = unsupported("fromNodes")
    icmps: Unsupported = unsupported("icmps")


class _EgressPeers(Model):
    to_endpoints: tuple[EndpointSelector, ...] | None = None
    to_cidr: tuple[CiliumCidr, ...] | None = Field(default=None, alias="toCIDR")
    to_cidr_set: tuple[CIDRRule, ...] | None = Field(default=None, alias="toCIDRSet")
    to_entities: tuple[Entity, ...] | None = None
    to_requires: Unsupported = unsupported("toRequires")
    to_services: Unsupported = unsupported("toServices")
    to_groups: Unsupported = unsupported("toGroups")
    to_nodes: Unsupported = unsupported("toNodes")
    icmps: Unsupported = unsupported("icmps")


class IngressRule(_IngressPeers):
    to_ports: tuple[PortRule, ...] | None = None
    authentication: Unsupported = unsupported("authentication")

    @field_validator("to_ports")
    @classmethod
    def _no_dns(cls, to_ports: tuple[PortRule, ...] | None) -> tuple[PortRule, ...] | None:
        for port_rule in to_ports or ():
            if port_rule.rules is not None and port_rule.rules.dns:
                raise ValueError("DNS rules are only allowed on egress (Cilium rejects them on ingress)")
        return to_ports


class IngressDenyRule(_IngressPeers):
    to_ports: tuple[PortDenyRule, ...] | None = None


class EgressRule(_EgressPeers):
    to_ports: tuple[PortRule, ...] | None = None
    to_fqdns: tuple[FQDNSelector, ...] | None = Field(default=None, alias="toFQDNs")
    authentication: Unsupported = unsupported("authentication")


class EgressDenyRule(_EgressPeers):
    to_ports: tuple[PortDenyRule, ...] | None = None


class DefaultDenyConfig(Model):
    """Unset means: default deny in each direction the rule has a section for."""

    ingress: StrictBool | None = None
    egress: StrictBool | None = None


class RuleLabel(Model):
    """One entry of a rule's `labels` (Cilium LabelArray); also accepted as "source:key=value"."""

    key: str
    value: str = ""
    source: str = ""


def _rule_label(value: Any) -> Any:
    if isinstance(value, str):
        source, _, rest = value.rpartition(":") if ":" in value.split("=", 1)[0] else ("", "", value)
        key, _, val = rest.partition("=")
        return {"key": key, "value": val, "source": source}
    return value


class Rule(Model):
    """One Cilium rule: selects endpoints and lists allow and deny sections."""

    endpoint_selector: EndpointSelector | None = None
    node_selector: EndpointSelector | None = None
    ingress: tuple[IngressRule, ...] | None = None
    ingress_deny: tuple[IngressDenyRule, ...] | None = None
    egress: tuple[EgressRule, ...] | None = None
    egress_deny: tuple[EgressDenyRule, ...] | None = None
    enable_default_deny: DefaultDenyConfig | None = None
    labels: tuple[Annotated[RuleLabel, BeforeValidator(_rule_label)], ...] | None = None
    description: str | None = None
    log: Unsupported = unsupported("log")

    @field_validator("node_selector")
    @classmethod
    def _no_nodes(cls, value: EndpointSelector | None) -> EndpointSelector | None:
        if value is not None:
            raise ValueError(
                "nodeSelector (host firewall policy) is not supported by meshctl; "
                "select pods with endpointSelector"
            )
        return value

    @model_validator(mode="after")
    def _selected(self) -> Rule:
        if self.endpoint_selector is None and self.node_selector is None:
            raise ValueError("a rule needs an endpointSelector ({} selects every endpoint)")
        return self


class _CiliumPolicy(Model):
    """spec or specs: one rule or a list of rules, both allowed together as in Cilium."""

    api_version: Literal["cilium.io/v2"]
    metadata: ObjectMeta
    spec: Rule | None = None
    specs: tuple[Rule, ...] | None = None
    status: Any = IGNORED  # written by the agents (derivativePolicies, conditions) in an export
    source: SourceRef = source_field()

    @model_validator(mode="after")
    def _has_rules(self) -> _CiliumPolicy:
        if self.spec is None and not self.specs:
            raise ValueError("a Cilium policy needs spec or specs")
        return self

    @property
    def rules(self) -> tuple[Rule, ...]:
        """spec first, then specs, in file order."""
        return ((self.spec,) if self.spec is not None else ()) + (self.specs or ())


class CiliumNetworkPolicy(_CiliumPolicy):
    kind: Literal["CiliumNetworkPolicy"]

    _namespace = model_validator(mode="before")(default_namespace)


class CiliumClusterwideNetworkPolicy(_CiliumPolicy):
    kind: Literal["CiliumClusterwideNetworkPolicy"]

    @field_validator("metadata")
    @classmethod
    def _no_namespace(cls, meta: ObjectMeta) -> ObjectMeta:
        if meta.namespace is not None:
            raise ValueError(
                f"a CiliumClusterwideNetworkPolicy is cluster-wide: remove namespace {meta.namespace!r}"
            )
        return meta
