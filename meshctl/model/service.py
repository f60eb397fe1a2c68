"""v1 Service: the frontends (ClusterIP, NodePort, LoadBalancer, external IPs) the LB serves.

`ServiceDocument` is the manifest's shape, validated the way the Kubernetes API server validates
it (ports named when there are several, nodePort only on NodePort/LoadBalancer, ...). `Service`
is the flat value compile reads. meshctl has no API server, so a missing `clusterIP` or
`nodePort` is allocated by the loader (meshctl.source.services) from a hash of the service's
name: the same repo always gives the same addresses; write them to pin them.

Accepted and ignored (they change nothing in an IPv4, single-cluster datapath): metadata fields
the API server sets, spec.clusterIPs (must agree with clusterIP), ipFamilies, ipFamilyPolicy,
allocateLoadBalancerNodePorts, loadBalancerClass, publishNotReadyAddresses, healthCheckNodePort,
internalTrafficPolicy: Cluster, trafficDistribution, ports[].appProtocol, status conditions.
Rejected by name: type ExternalName, externalName, loadBalancerSourceRanges,
internalTrafficPolicy: Local.
"""

from __future__ import annotations

from ipaddress import IPv4Address, ip_address
from typing import Annotated, Any, Literal

from pydantic import AfterValidator, BeforeValidator, Field, field_validator, model_validator

from meshctl.model.base import Model, SourceRef, check_dns_label, source_field
from meshctl.model.labels import LabelKey, LabelValue
from meshctl.model.meta import IGNORED, ObjectMeta, default_namespace
from meshctl.model.ports import check_port_name, check_port_number, parse_k8s_port

ServiceType = Literal["ClusterIP", "NodePort", "LoadBalancer"]
ServiceProtocol = Literal["TCP", "UDP", "SCTP"]
SessionAffinity = Literal["None", "ClientIP"]
TrafficPolicy = Literal["Cluster", "Local"]
NODE_PORT_RANGE = (30000, 32767)  # the API server's default --service-node-port-range
DEFAULT_AFFINITY_TIMEOUT = 10800  # v1.DefaultClientIPServiceAffinitySeconds
MAX_AFFINITY_TIMEOUT = 86400


def _ipv4(value: Any) -> Any:
    if not isinstance(value, str):
        raise ValueError(f"{value!r} is not an IPv4 address (write it as a string)")
    try:
        addr = ip_address(value)
    except ValueError:
        raise ValueError(f"{value!r} is not an IP address") from None
    if not isinstance(addr, IPv4Address):
        raise ValueError(f"{value!r} is IPv6: services are IPv4-only")
    return addr


def _cluster_ip(value: Any) -> Any:
    """"None" (headless), "" (allocate, like an omitted field) or an IPv4 address."""
    if value in (None, "", "None"):
        return value or None
    return _ipv4(value)


def _node_port(value: int) -> int:
    low, high = NODE_PORT_RANGE
    if not low <= value <= high:
        raise ValueError(f"nodePort {value} is outside the node port range {low}-{high}")
    return value


IPv4 = Annotated[IPv4Address, BeforeValidator(_ipv4)]
ClusterIP = Annotated[IPv4Address | Literal["None"] | None, BeforeValidator(_cluster_ip)]
# targetPort: a number or the name of a backend pod's containerPort, read like NetworkPolicyPort.port.
TargetPort = Annotated[int | str, BeforeValidator(parse_k8s_port)]
PortName = Annotated[str, AfterValidator(check_port_name)]


def _unsupported(why: str) -> Any:
    def reject(value: Any) -> Any:
        raise ValueError(why)

    return reject


class ServicePort(Model):
    """One port of a service; `target_port` is an int or a named containerPort (str)."""

    name: str | None = None
    protocol: ServiceProtocol = "TCP"
    port: Annotated[int, AfterValidator(check_port_number)]
    target_port: TargetPort | None = None
    node_port: Annotated[int, AfterValidator(_node_port)] | None = None
    app_protocol: Any = IGNORED

    @field_validator("name")
    @classmethod
    def _name(cls, value: str | None) -> str | None:
        # Service port names are DNS labels (they name SRV records), unlike containerPort names.
        return None if value is None else check_dns_label(value)

    @property
    def target(self) -> int | str:
        """targetPort, defaulting to port as in Kubernetes."""
        return self.port if self.target_port is None else self.target_port


class ClientIPConfig(Model):
    timeout_seconds: int = Field(default=DEFAULT_AFFINITY_TIMEOUT)

    @field_validator("timeout_seconds")
    @classmethod
    def _range(cls, value: int) -> int:
        if not 0 < value <= MAX_AFFINITY_TIMEOUT:
            raise ValueError(f"timeoutSeconds {value} must be 1..{MAX_AFFINITY_TIMEOUT}")
        return value


class SessionAffinityConfig(Model):
    client_ip: ClientIPConfig | None = Field(default=None, alias="clientIP")


class ServiceSpec(Model):
    type: ServiceType = "ClusterIP"
    cluster_ip: ClusterIP = Field(default=None, alias="clusterIP")
    cluster_ips: tuple[str, ...] | None = Field(default=None, alias="clusterIPs")
    ports: tuple[ServicePort, ...] = ()
    selector: dict[LabelKey, LabelValue] | None = None
    session_affinity: SessionAffinity = "None"
    session_affinity_config: SessionAffinityConfig | None = None
    external_traffic_policy: TrafficPolicy | None = None
    external_ips: tuple[IPv4, ...] = Field(default=(), alias="externalIPs")
    load_balancer_ip: IPv4 | None = Field(default=None, alias="loadBalancerIP")
    # Accepted, no effect here (see the module docstring).
    ip_families: Any = IGNORED
    ip_family_policy: Any = IGNORED
    allocate_load_balancer_node_ports: Any = IGNORED
    load_balancer_class: Any = IGNORED
    publish_not_ready_addresses: Any = IGNORED
    health_check_node_port: Any = IGNORED
    traffic_distribution: Any = IGNORED
    internal_traffic_policy: Literal["Cluster"] | None = Field(default=None, exclude=True, repr=False)
    # Rejected with a reason.
    external_name: Annotated[Any, AfterValidator(_unsupported(
        "ExternalName services are not supported by meshctl (they are DNS-only, no load balancing)"
    ))] = Field(default=None, exclude=True, repr=False)
    load_balancer_source_ranges: Annotated[Any, AfterValidator(_unsupported(
        "loadBalancerSourceRanges is not supported by meshctl; filter clients with a CiliumNetworkPolicy"
    ))] = Field(default=None, exclude=True, repr=False)

    @field_validator("type", mode="before")
    @classmethod
    def _type(cls, value: Any) -> Any:
        if value == "ExternalName":
            raise ValueError("ExternalName services are not supported by meshctl (they are DNS-only, "
                             "no load balancing); use ClusterIP, NodePort or LoadBalancer")
        return value

    @field_validator("internal_traffic_policy", mode="before")
    @classmethod
    def _itp(cls, value: Any) -> Any:
        if value == "Local":
            raise ValueError("internalTrafficPolicy: Local is not supported by meshctl (only Cluster)")
        return value

    @model_validator(mode="after")
    def _consistent(self) -> ServiceSpec:
        headless = self.cluster_ip == "None"
        if self.cluster_ips and str(self.cluster_ip or self.cluster_ips[0]) != self.cluster_ips[0]:
            raise ValueError(f"clusterIPs[0] {self.cluster_ips[0]!r} must equal clusterIP {self.cluster_ip}")
        if headless and self.type != "ClusterIP":
            raise ValueError(f"clusterIP: None (headless) is only valid for type ClusterIP, not {self.type}")
        if not self.ports and not headless:
            raise ValueError("ports: a service needs at least one port (only a headless one may have none)")
        seen: set[tuple[int, str]] = set()
        names: set[str] = set()
        for i, p in enumerate(self.ports):
            if len(self.ports) > 1 and not p.name:
                raise ValueError(f"ports[{i}].name is required when a service has more than one port")
            if p.name in names:
                raise ValueError(f"ports[{i}].name {p.name!r} is used twice")
            names.add(p.name or "")
            if (p.port, p.protocol) in seen:
                raise ValueError(f"ports[{i}]: port {p.port}/{p.protocol} is listed twice")
            seen.add((p.port, p.protocol))
            if p.node_port is not None and self.type == "ClusterIP":
                raise ValueError(f"ports[{i}].nodePort needs type NodePort or LoadBalancer, not ClusterIP")
        if self.external_traffic_policy is not None and self.type == "ClusterIP" and not self.external_ips:
            raise ValueError("externalTrafficPolicy applies only to NodePort, LoadBalancer or externalIPs")
        if self.load_balancer_ip is not None and self.type != "LoadBalancer":
            raise ValueError("loadBalancerIP needs type LoadBalancer")
        if self.session_affinity_config is not None and self.session_affinity != "ClientIP":
            raise ValueError("sessionAffinityConfig needs sessionAffinity: ClientIP")
        return self


class LoadBalancerIngress(Model):
    ip: IPv4 | None = None
    hostname: Any = IGNORED
    ip_mode: Any = IGNORED
    ports: Any = IGNORED


class LoadBalancerStatus(Model):
    ingress: tuple[LoadBalancerIngress, ...] = ()


class ServiceStatus(Model):
    load_balancer: LoadBalancerStatus | None = None
    conditions: Any = IGNORED


class Service(Model):
    """A service as compile sees it: addresses resolved (clusterIP/nodePorts allocated)."""

    namespace: str
    name: str
    labels: dict[str, str] = Field(default_factory=dict)
    type: ServiceType = "ClusterIP"
    headless: bool = False  # clusterIP: None: no frontend, nothing to load-balance
    cluster_ip: IPv4Address | None = None  # set for every non-headless service once loaded
    ports: tuple[ServicePort, ...] = ()
    selector: dict[str, str] | None = None  # None: no selector, backends are not managed here
    session_affinity: SessionAffinity = "None"
    session_affinity_timeout: int = DEFAULT_AFFINITY_TIMEOUT  # seconds, for ClientIP
    external_traffic_policy: TrafficPolicy = "Cluster"
    external_ips: tuple[IPv4Address, ...] = ()
    load_balancer_ip: IPv4Address | None = None
    load_balancer_ingress: tuple[IPv4Address, ...] = ()  # status.loadBalancer.ingress[].ip
    source: SourceRef = source_field()

    @property
    def key(self) -> str:
        """"namespace/name", as plans and catalogs name a service."""
        return f"{self.namespace}/{self.name}"

    @property
    def load_balancer_ips(self) -> tuple[IPv4Address, ...]:
        """loadBalancerIP then status ingress IPs, without duplicates (LoadBalancer only)."""
        if self.type != "LoadBalancer":
            return ()
        ips = ((self.load_balancer_ip,) if self.load_balancer_ip else ()) + self.load_balancer_ingress
        return tuple(dict.fromkeys(ips))

    @property
    def external_addresses(self) -> tuple[IPv4Address, ...]:
        """Addresses reached from outside the cluster: external IPs and load-balancer IPs."""
        return tuple(dict.fromkeys(self.external_ips + self.load_balancer_ips))


class ServiceDocument(Model):
    api_version: Literal["v1"]
    kind: Literal["Service"]
    metadata: ObjectMeta
    spec: ServiceSpec
    status: ServiceStatus | None = None

    _namespace = model_validator(mode="before")(default_namespace)

    @field_validator("metadata")
    @classmethod
    def _name(cls, meta: ObjectMeta) -> ObjectMeta:
        # Service names are DNS-1035 labels: they become DNS names.
        check_dns_label(meta.name)
        if meta.name[0].isdigit():
            raise ValueError(f"service name {meta.name!r} must start with a letter")
        return meta

    def to_service(self, source: SourceRef) -> Service:
        """The Service value; clusterIP/nodePorts left as written (None = allocate later)."""
        s = self.spec
        ingress = tuple(i.ip for i in (self.status.load_balancer.ingress
                                       if self.status and self.status.load_balancer else ()) if i.ip)
        affinity = s.session_affinity_config.client_ip if s.session_affinity_config else None
        cluster_ip = s.cluster_ip
        if cluster_ip is None and s.cluster_ips and s.cluster_ips[0] != "None":
            cluster_ip = _ipv4(s.cluster_ips[0])
        return Service(
            namespace=self.metadata.namespace or "default", name=self.metadata.name,
            labels=dict(self.metadata.labels), type=s.type,
            headless=cluster_ip == "None", cluster_ip=None if cluster_ip == "None" else cluster_ip,
            ports=s.ports, selector=dict(s.selector) if s.selector is not None else None,
            session_affinity=s.session_affinity,
            session_affinity_timeout=affinity.timeout_seconds if affinity else DEFAULT_AFFINITY_TIMEOUT,
            external_traffic_policy=s.external_traffic_policy or "Cluster",
            external_ips=s.external_ips, load_balancer_ip=s.load_balancer_ip,
            load_balancer_ingress=ingress, source=source,
        )
