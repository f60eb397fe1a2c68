"""Frozen pydantic models of the desired state: policies, inventory, checks and meshctl.toml.

Imports nothing else of meshctl (pure values); loading and error mapping live in meshctl.source.
"""

from meshctl.model.base import SourceRef
from meshctl.model.check import ConnectivityCheck
from meshctl.model.cilium import (
    CIDRRule,
    CiliumClusterwideNetworkPolicy,
    CiliumNetworkPolicy,
    DefaultDenyConfig,
    EgressDenyRule,
    EgressRule,
    IngressDenyRule,
    IngressRule,
    L7Rules,
    PortDenyRule,
    PortProtocol,
    PortRule,
    PortRuleDNS,
    PortRuleHTTP,
    Rule,
)
from meshctl.model.config import DatapathSettings, LabSettings, MeshConfig, NodeConfig, Rollout
from meshctl.model.inventory import ContainerPort, Namespace, Pod
from meshctl.model.k8s import (
    IPBlock,
    NetworkPolicy,
    NetworkPolicyEgressRule,
    NetworkPolicyIngressRule,
    NetworkPolicyPeer,
    NetworkPolicyPort,
    NetworkPolicySpec,
)
from meshctl.model.meta import ObjectMeta
from meshctl.model.selector import (
    EndpointSelector,
    EndpointSelectorRequirement,
    LabelSelector,
    LabelSelectorRequirement,
)
from meshctl.model.service import Service, ServicePort

Policy = NetworkPolicy | CiliumNetworkPolicy | CiliumClusterwideNetworkPolicy

__all__ = [
    "CIDRRule",
    "CiliumClusterwideNetworkPolicy",
    "CiliumNetworkPolicy",
    "ConnectivityCheck",
    "ContainerPort",
    "DatapathSettings",
    "DefaultDenyConfig",
    "EgressDenyRule",
    "EgressRule",
    "EndpointSelector",
    "EndpointSelectorRequirement",
    "IPBlock",
    "IngressDenyRule",
    "IngressRule",
    "L7Rules",
    "LabSettings",
    "LabelSelector",
    "LabelSelectorRequirement",
    "MeshConfig",
    "Namespace",
    "NetworkPolicy",
    "NetworkPolicyEgressRule",
    "NetworkPolicyIngressRule",
    "NetworkPolicyPeer",
    "NetworkPolicyPort",
    "NetworkPolicySpec",
    "NodeConfig",
    "ObjectMeta",
    "Pod",
    "Policy",
    "PortDenyRule",
    "PortProtocol",
    "PortRule",
    "PortRuleDNS",
    "PortRuleHTTP",
    "Rollout",
    "Rule",
    "Service",
    "ServicePort",
    "SourceRef",
]
