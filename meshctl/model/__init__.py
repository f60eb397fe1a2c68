"""Frozen pydantic models of the desired state: policies, inventory, checks and meshctl.toml.

Imports nothing else of meshctl (pure values); loading and error mapping live in meshctl.source.
"""

from typing import TYPE_CHECKING, Any

from meshctl.lazyexports import lazy_exports

if TYPE_CHECKING:
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

# name -> its module: a model is imported when first used (each module builds its pydantic
# schemas on import, and a command needs a few of them)
_WHERE = {
    "CIDRRule": "cilium",
    "CiliumClusterwideNetworkPolicy": "cilium",
    "CiliumNetworkPolicy": "cilium",
    "ConnectivityCheck": "check",
    "ContainerPort": "inventory",
    "DatapathSettings": "config",
    "DefaultDenyConfig": "cilium",
    "EgressDenyRule": "cilium",
    "EgressRule": "cilium",
    "EndpointSelector": "selector",
    "EndpointSelectorRequirement": "selector",
    "IPBlock": "k8s",
    "IngressDenyRule": "cilium",
    "IngressRule": "cilium",
    "L7Rules": "cilium",
    "LabSettings": "config",
    "LabelSelector": "selector",
    "LabelSelectorRequirement": "selector",
    "MeshConfig": "config",
    "Namespace": "inventory",
    "NetworkPolicy": "k8s",
    "NetworkPolicyEgressRule": "k8s",
    "NetworkPolicyIngressRule": "k8s",
    "NetworkPolicyPeer": "k8s",
    "NetworkPolicyPort": "k8s",
    "NetworkPolicySpec": "k8s",
    "NodeConfig": "config",
    "ObjectMeta": "meta",
    "Pod": "inventory",
    "PortDenyRule": "cilium",
    "PortProtocol": "cilium",
    "PortRule": "cilium",
    "PortRuleDNS": "cilium",
    "PortRuleHTTP": "cilium",
    "Rollout": "config",
    "Rule": "cilium",
    "Service": "service",
    "ServicePort": "service",
    "SourceRef": "base",
}


_exports = lazy_exports(__name__, _WHERE)


def __getattr__(name: str) -> Any:
    if name == "Policy":  # the union of the policy kinds, made once they are imported
        global Policy
        Policy = _exports("NetworkPolicy") | _exports("CiliumNetworkPolicy") | _exports(
            "CiliumClusterwideNetworkPolicy")
        return Policy
    return _exports(name)


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
