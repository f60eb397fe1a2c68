"""The compiler's input, flattened from DesiredState: plain values, no pydantic.

`spec_from_desired` is the only place that knows the loader's models; tests and the
conformance runner can build a ClusterSpec directly.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field
from ipaddress import IPv4Address
from typing import Any

from meshctl.compile.documents import Document, as_document

METADATA_NAME = "kubernetes.io/metadata.name"


@dataclass(frozen=True)
class PodSpec:
    namespace: str
    name: str
    labels: Mapping[str, str]
    node: str
    ports: tuple[tuple[str | None, int, str], ...] = ()  # (name, containerPort, protocol)
    ip: IPv4Address | None = None

    @property
    def key(self) -> str:
        return f"{self.namespace}/{self.name}"


def namespace_labels(namespaces: Mapping[str, Mapping[str, str]], namespace: str) -> dict[str, str]:
    """Labels as the API server stores them (it always adds kubernetes.io/metadata.name)."""
    labels = dict(namespaces.get(namespace, {}))
    labels.setdefault(METADATA_NAME, namespace)
    return labels


@dataclass(frozen=True)
class ClusterSpec:
    cluster: str
    nodes: tuple[str, ...]
    namespaces: Mapping[str, Mapping[str, str]]
    pods: tuple[PodSpec, ...]
    policies: tuple[Document, ...]
    mode: str = "default"  # policyEnforcementMode: default | always | never
    ipv6_pass: bool = False
    dns_settings: tuple[tuple[str, int], ...] = ()  # [dns] as the nodes' fqdn tables carry it
    extra: Mapping[str, Any] = field(default_factory=dict)

    def namespace_labels(self, namespace: str) -> dict[str, str]:
        return namespace_labels(self.namespaces, namespace)


def pod_specs(pods: Any) -> tuple[PodSpec, ...]:
    """Inventory Pods (meshctl.model.inventory) as the compiler's PodSpecs."""
    return tuple(
        PodSpec(p.namespace, p.name, dict(p.labels), p.node_name,
                tuple((cp.name, int(cp.container_port), str(cp.protocol)) for cp in p.ports), p.pod_ip)
        for p in pods
    )


def row_specs(rows: Any, cache: dict[str, tuple[Any, PodSpec]] | None = None) -> tuple[PodSpec, ...]:
    """A runtime inventory's PodRows as PodSpecs; with `cache` (key -> (row, spec), kept by the
    caller between calls) an unchanged row reuses its spec, so only new pods cost anything."""
    out = []
    for row in rows:
        hit = cache.get(row.key) if cache is not None else None
        if hit is not None and hit[0] == row:
            out.append(hit[1])
            continue
        spec = PodSpec(row.namespace, row.name, dict(row.labels), row.node, tuple(row.ports),
                       IPv4Address(row.ip) if row.ip else None)
        if cache is not None:
            cache[row.key] = (row, spec)
        out.append(spec)
    return tuple(out)


def spec_from_desired(desired: Any) -> ClusterSpec:
    cfg = desired.config
    pods = pod_specs(desired.pods)
    return ClusterSpec(
        cluster=cfg.cluster,
        nodes=tuple(n.name for n in cfg.nodes),
        namespaces={ns.name: dict(ns.labels) for ns in desired.namespaces},
        pods=pods,
        policies=tuple(
            as_document(p, getattr(desired, "lines", None), cfg.policy.audit_namespaces)
            for p in desired.policies
        ),
        mode=cfg.policy_enforcement_mode,
        ipv6_pass=cfg.datapath.ipv6 == "pass",
        dns_settings=dns_settings(cfg.dns),
    )


def dns_settings(dns: Any) -> tuple[tuple[str, int], ...]:
    """meshctl.toml [dns] as fqdn-table entries, the defaults left out."""
    from meshctl.nodestate import DNS_MIN_TTL, DNS_NXDOMAIN

    out = [(DNS_MIN_TTL, int(dns.min_ttl))] if dns.min_ttl else []
    return (*out, *([(DNS_NXDOMAIN, 1)] if dns.reject_response_code == "nameError" else []))
