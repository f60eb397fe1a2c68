"""networking.k8s.io/v1 NetworkPolicy, field for field.

Semantics that depend on the field being absent or empty (policyTypes defaulting, `from`
omitted vs empty) are kept: optional lists are None when omitted and () when written empty.
"""

from __future__ import annotations

from typing import Any, Literal

from pydantic import Field, field_validator, model_validator

from meshctl.model.base import Model, SourceRef, source_field
from meshctl.model.cidr import K8sCidr, check_excepts
from meshctl.model.meta import IGNORED, ObjectMeta, default_namespace
from meshctl.model.ports import EndPort, K8sPort, check_range
from meshctl.model.selector import LabelSelector

K8sProtocol = Literal["TCP", "UDP", "SCTP"]
PolicyType = Literal["Ingress", "Egress"]


class IPBlock(Model):
    cidr: K8sCidr
    except_: tuple[K8sCidr, ...] | None = Field(default=None, alias="except")

    @model_validator(mode="after")
    def _inside(self) -> IPBlock:
        check_excepts(self.cidr, self.except_)
        return self


class NetworkPolicyPeer(Model):
    """podSelector and/or namespaceSelector (ANDed), or an ipBlock alone."""

    pod_selector: LabelSelector | None = None
    namespace_selector: LabelSelector | None = None
    ip_block: IPBlock | None = None

    @model_validator(mode="after")
    def _one_kind(self) -> NetworkPolicyPeer:
        selectors = self.pod_selector is not None or self.namespace_selector is not None
        if self.ip_block is not None and selectors:
            raise ValueError("ipBlock cannot be combined with podSelector or namespaceSelector in one peer")
        if self.ip_block is None and not selectors:
            raise ValueError("a peer needs podSelector, namespaceSelector or ipBlock")
        return self


class NetworkPolicyPort(Model):
    """protocol defaults to TCP; port omitted = every port; endPort makes a range."""

    protocol: K8sProtocol = "TCP"
    port: K8sPort = None
    end_port: EndPort = None

    @model_validator(mode="after")
    def _range(self) -> NetworkPolicyPort:
        check_range(self.port, self.end_port)
        return self


class NetworkPolicyIngressRule(Model):
    from_: tuple[NetworkPolicyPeer, ...] | None = Field(default=None, alias="from")
    ports: tuple[NetworkPolicyPort, ...] | None = None


class NetworkPolicyEgressRule(Model):
    to: tuple[NetworkPolicyPeer, ...] | None = None
    ports: tuple[NetworkPolicyPort, ...] | None = None


class NetworkPolicySpec(Model):
    pod_selector: LabelSelector
    policy_types: tuple[PolicyType, ...] | None = None
    ingress: tuple[NetworkPolicyIngressRule, ...] | None = None
    egress: tuple[NetworkPolicyEgressRule, ...] | None = None

    @field_validator("policy_types")
    @classmethod
    def _unique(cls, types: tuple[str, ...] | None) -> tuple[str, ...] | None:
        if types is not None and len(set(types)) != len(types):
            raise ValueError(f"policyTypes lists a type twice: {list(types)}")
        return types

    @property
    def effective_policy_types(self) -> tuple[PolicyType, ...]:
        """The API server's defaulting: Ingress always, Egress when egress rules exist."""
        if self.policy_types is not None:
            return self.policy_types
        return ("Ingress", "Egress") if self.egress else ("Ingress",)


class NetworkPolicy(Model):
    api_version: Literal["networking.k8s.io/v1"]
    kind: Literal["NetworkPolicy"]
    metadata: ObjectMeta
    spec: NetworkPolicySpec
    status: Any = IGNORED  # NetworkPolicyStatus (Kubernetes 1.24-1.26): server-written, exported as {}
    source: SourceRef = source_field()

    _namespace = model_validator(mode="before")(default_namespace)


__all__ = [
    "IPBlock",
    "NetworkPolicy",
    "NetworkPolicyEgressRule",
    "NetworkPolicyIngressRule",
    "NetworkPolicyPeer",
    "NetworkPolicyPort",
    "NetworkPolicySpec",
]
