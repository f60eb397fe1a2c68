"""Inventory: the v1 Namespaces and Pods the policies select.

Manifests are validated in their Kubernetes shape (`NamespaceDocument`, `PodDocument`) and
then flattened into the small `Namespace` and `Pod` values compile works with. Pods are
inventory, not policy: Kubernetes fields we do not need (image, command, resources...) are
accepted and ignored inside spec, containers and status, but the top level stays strict.
"""

from __future__ import annotations

from ipaddress import IPv4Address
from typing import Annotated, Literal

from pydantic import AfterValidator, ConfigDict, Field, field_validator

from meshctl.model.base import Model, SourceRef, check_dns_label, source_field
from meshctl.model.meta import ObjectMeta
from meshctl.model.ports import check_port_name, check_port_number

PodProtocol = Literal["TCP", "UDP", "SCTP"]


class _Lenient(Model):
    model_config = ConfigDict(extra="ignore")


class Namespace(Model):
    name: str
    labels: dict[str, str] = Field(default_factory=dict)
    source: SourceRef = source_field()


class ContainerPort(_Lenient):
    """A port a pod listens on; its name is what named ports in policies resolve to.

    Lenient like the rest of a pod spec: hostPort and hostIP are Kubernetes fields we ignore.
    """

    name: Annotated[str, AfterValidator(check_port_name)] | None = None
    container_port: Annotated[int, AfterValidator(check_port_number)]
    protocol: PodProtocol = "TCP"


class Pod(Model):
    namespace: str
    name: str
    labels: dict[str, str] = Field(default_factory=dict)
    node_name: str
    ports: tuple[ContainerPort, ...] = ()
    pod_ip: IPv4Address | None = Field(default=None, alias="podIP")
    source: SourceRef = source_field()

    @property
    def key(self) -> str:
        """"namespace/name": how checks, catalogs and the lab refer to a pod."""
        return f"{self.namespace}/{self.name}"


class NamespaceDocument(Model):
    api_version: Literal["v1"]
    kind: Literal["Namespace"]
    metadata: ObjectMeta
    spec: dict[str, object] | None = None
    status: dict[str, object] | None = None

    @field_validator("metadata")
    @classmethod
    def _name(cls, meta: ObjectMeta) -> ObjectMeta:
        check_dns_label(meta.name)
        if meta.namespace is not None:
            raise ValueError("a Namespace is not namespaced: remove metadata.namespace")
        return meta

    def to_namespace(self, source: SourceRef) -> Namespace:
        return Namespace(name=self.metadata.name, labels=dict(self.metadata.labels), source=source)


class ContainerSpec(_Lenient):
    name: str | None = None
    ports: tuple[ContainerPort, ...] = ()


class PodSpec(_Lenient):
    node_name: str = Field(description="the meshctl.toml node the pod runs on")
    containers: tuple[ContainerSpec, ...] = ()
    init_containers: tuple[ContainerSpec, ...] = ()

    @field_validator("containers")
    @classmethod
    def _unique_port_names(cls, containers: tuple[ContainerSpec, ...]) -> tuple[ContainerSpec, ...]:
        seen: set[str] = set()
        for container in containers:
            for port in container.ports:
                if port.name is not None:
                    if port.name in seen:
                        raise ValueError(f"port name {port.name!r} is used twice in this pod")
                    seen.add(port.name)
        return containers


class PodStatus(_Lenient):
    pod_ip: IPv4Address | None = Field(default=None, alias="podIP")


class PodDocument(Model):
    api_version: Literal["v1"]
    kind: Literal["Pod"]
    metadata: ObjectMeta
    spec: PodSpec
    status: PodStatus | None = None

    def to_pod(self, source: SourceRef) -> Pod:
        return Pod(
            namespace=self.metadata.namespace or "default",
            name=self.metadata.name,
            labels=dict(self.metadata.labels),
            node_name=self.spec.node_name,
            ports=tuple(p for c in self.spec.containers for p in c.ports),
            pod_ip=self.status.pod_ip if self.status else None,
            source=source,
        )
