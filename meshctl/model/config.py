"""meshctl.toml: the cluster, its nodes and how meshctl rolls changes out.

`ConfigFile` is the file's shape (camelCase keys, unknown keys are errors); `MeshConfig` is
the resolved value everyone else reads (defaults filled, paths absolute, canary decided).
"""

from __future__ import annotations

from ipaddress import IPv4Address, IPv4Network
from pathlib import Path
from typing import Annotated, Literal

from pydantic import AfterValidator, BeforeValidator, Field, StrictBool, field_validator, model_validator

from meshctl.fqdnmatch import name_error, normalize
from meshctl.model.base import Model, check_dns_label
from meshctl.model.lbconfig import (
    DEFAULT_MAGLEV_SEED,
    DEFAULT_MAGLEV_TABLE_SIZE,
    LoadBalancerAlgorithm,
    LoadBalancerMode,
    check_maglev_seed,
    check_maglev_table_size,
)
from meshctl.model.staging import DURATION_PATTERN

EnforcementMode = Literal["default", "always", "never"]
NodeName = Annotated[str, AfterValidator(check_dns_label)]
DEFAULT_UNDERLAY = IPv4Network("172.31.250.0/24")
DEFAULT_SERVICE_CIDR = IPv4Network("10.96.0.0/16")


def _strict_network(value: object) -> object:
    if isinstance(value, str):
        try:
            IPv4Network(value)
        except ValueError as err:
            raise ValueError(f"{value!r} is not an IPv4 CIDR ({err})") from None
    return value


# A CIDR key of the file: written as a string and parsed strictly (one rule for every section).
StrictNetwork = Annotated[IPv4Network, BeforeValidator(_strict_network)]


class ClusterSection(Model):
    name: Annotated[str, AfterValidator(check_dns_label)]
    policy_enforcement_mode: EnforcementMode = "default"
    # Services (kube-proxy replacement): off by default, like Cilium's kubeProxyReplacement=false.
    kube_proxy_replacement: StrictBool = False
    service_cidr: StrictNetwork = Field(default=DEFAULT_SERVICE_CIDR, alias="serviceCIDR")


def _strict_address(value: object) -> object:
    """A node address is written as a string ("192.0.2.10"): no integers, no CIDRs."""
    if value is None or isinstance(value, IPv4Address):
        return value
    if not isinstance(value, str):
        raise ValueError(f"{value!r} is not an IPv4 address (write it as a string, e.g. \"192.0.2.10\")")
    try:
        addr = IPv4Address(value)
    except ValueError as err:
        raise ValueError(f"{value!r} is not an IPv4 address ({err})") from None
    if addr.is_unspecified or addr.is_multicast or addr == IPv4Address("255.255.255.255"):
        raise ValueError(f"{value} cannot be a node's address (unspecified, multicast or broadcast)")
    return addr


NodeAddress = Annotated[IPv4Address | None, BeforeValidator(_strict_address)]


class NodeSection(Model):
    name: NodeName
    pod_cidr: StrictNetwork = Field(alias="podCIDR")
    # The node's underlay (Kubernetes InternalIP): WireGuard endpoints, NodePort frontends, SNAT.
    # Optional: the lab knows its nodes' addresses; a real cluster's nodes need it here.
    address: NodeAddress = None


class DirSection(Model):
    dir: str


class RolloutSection(Model):
    canary: tuple[NodeName, ...] | NodeName | None = None
    batch_size: int = Field(default=1, ge=1)
    verify_window: float = Field(default=2.0, ge=0)
    drop_rate_threshold: float = Field(default=0.0, ge=0)
    rollback: Literal["node", "all"] = "node"
    # Staged policies: refuse to enforce one staged for less than this, or that saw would-drops
    # in this window (apply --force-enforce overrides). None: no such gate.
    require_clean_audit: str | None = Field(default=None, pattern=DURATION_PATTERN)


class PolicySection(Model):
    """[policy]: every policy of these namespaces is staged (audit mode), as the annotation does;
    plans show the connectivity impact of clusters up to impactMaxPods pods (it costs pods^2)."""

    audit_namespaces: tuple[str, ...] = ()
    impact_max_pods: int = Field(default=400, ge=0)


class DatapathSection(Model):
    ipv6: Literal["drop", "pass"] = "drop"


def _dns_name(value: str) -> str:
    if error := name_error(value):
        raise ValueError(error)
    return normalize(value)


class ExternalHost(Model):
    """[[lab.externalHosts]]: a host outside the cluster (a netns on the lab's underlay) that
    the lab's kube-dns answers for, serving TCP on `ports`; `ttl`: of its DNS answers."""

    name: Annotated[str, AfterValidator(_dns_name)]
    address: IPv4Address
    ports: tuple[Annotated[int, Field(ge=1, le=65535)], ...] = ()
    ttl: int = Field(default=60, ge=0, le=86400)


class LabSection(Model):
    underlay_cidr: StrictNetwork = Field(default=DEFAULT_UNDERLAY, alias="underlayCIDR")
    external_hosts: tuple[ExternalHost, ...] = ()


class ObservabilitySection(Model):
    """Flow store retention and the agents' metrics endpoints (meshctl agent)."""

    flow_retention: str = Field(default="24h", pattern=DURATION_PATTERN)
    flow_max_rows: int = Field(default=1_000_000, ge=1)
    metrics_address: str = "127.0.0.1"
    metrics_base_port: int = Field(default=9690, ge=0, le=65535)  # node i serves on base + i; 0 = off


class InventorySection(Model):
    """[inventory]: where pods and namespaces come from (the repo's YAML, the lab, a cluster)."""

    source: Literal["repo", "lab", "kubernetes"] = "repo"
    kubeconfig: str | None = None  # kubernetes: a kubeconfig file (default: $KUBECONFIG, in-cluster)
    context: str | None = None  # kubernetes: a context of that kubeconfig


class ApplySection(Model):
    """[apply]: how apply reaches nodes: this host's kernel (lab) or each node's agent socket."""

    driver: Literal["lab", "agent"] = "lab"
    socket_dir: str | None = None  # agent: where the agents' sockets are (default /run/meshctl)
    # agent: seconds an apply holds a node without renewing before the node's agent reverts it
    lease: float = Field(default=30.0, gt=0, le=3600)


class AgentsSection(Model):
    """[agents]: the node agents' API over TCP with mutual TLS (meshctl.agentapi.tls).

    With `port`, the CLI reaches each node's agent at the node's `address` and that port, and
    trusts it only when `ca` signed its certificate and the certificate names the node; `cert`
    and `key` are the CLI's client certificate ($MESHCTL_AGENT_CA/_CERT/_KEY override the three
    paths, e.g. from a CI secret). Without `port` the agents are reached on unix sockets.
    """

    port: int | None = Field(default=None, ge=1, le=65535)
    ca: str | None = None
    cert: str | None = None
    key: str | None = None
    insecure: StrictBool = False  # plain TCP: for a lab only

    @model_validator(mode="after")
    def _tls_or_insecure(self) -> AgentsSection:
        missing = [n for n in ("ca", "cert", "key") if getattr(self, n) is None]
        if self.port is not None and not self.insecure and missing:
            raise ValueError(f"over TCP the agents need mutual TLS: set {', '.join(missing)} "
                             "(or insecure = true, for a lab only)")
        return self


class LoadBalancerSection(Model):
    """[loadBalancer]: how services reach backends on other nodes, and how a backend is chosen."""

    mode: LoadBalancerMode = "snat"
    algorithm: LoadBalancerAlgorithm = "random"


class MaglevSection(Model):
    """[maglev]: the consistent-hashing table; the seed must be the same on every node."""

    table_size: int = DEFAULT_MAGLEV_TABLE_SIZE
    hash_seed: str = DEFAULT_MAGLEV_SEED

    @field_validator("table_size")
    @classmethod
    def _prime(cls, value: int) -> int:
        return check_maglev_table_size(value)

    @field_validator("hash_seed")
    @classmethod
    def _seed(cls, value: str) -> str:
        return check_maglev_seed(value)


class EncryptionSection(Model):
    """[encryption]: transparent encryption between nodes (Cilium's encryption.* settings)."""

    enabled: bool = False
    type: Literal["wireguard"] = "wireguard"
    listen_port: int = Field(default=51871, ge=1, le=65535)
    persistent_keepalive: int = Field(default=0, ge=0, le=65535)  # seconds, 0 = off
    strict_mode: bool = False  # drop unencrypted pod traffic between nodes
    node_encryption: bool = False  # node-to-node traffic through the tunnel too


class DnsSection(Model):
    """The nodes' DNS proxies (FQDN egress), as Cilium's --tofqdns-min-ttl and
    --tofqdns-dns-reject-response-code."""

    min_ttl: int = Field(default=0, ge=0, le=86400, alias="minTTL")  # seconds a learned IP stays at least
    reject_response_code: Literal["refused", "nameError"] = "refused"  # the answer to a query no rule allows


class ConfigFile(Model):
    """The TOML document as written."""

    cluster: ClusterSection
    nodes: tuple[NodeSection, ...] = Field(min_length=1)
    state: DirSection | None = None
    plans: DirSection | None = None
    rollout: RolloutSection = RolloutSection()
    policy: PolicySection = PolicySection()
    datapath: DatapathSection = DatapathSection()
    lab: LabSection = LabSection()
    observability: ObservabilitySection = ObservabilitySection()
    load_balancer: LoadBalancerSection = LoadBalancerSection()
    maglev: MaglevSection = MaglevSection()
    encryption: EncryptionSection = EncryptionSection()
    inventory: InventorySection = InventorySection()
    apply: ApplySection = ApplySection()
    agents: AgentsSection = AgentsSection()
    dns: DnsSection = DnsSection()

    @field_validator("nodes")
    @classmethod
    def _distinct(cls, nodes: tuple[NodeSection, ...]) -> tuple[NodeSection, ...]:
        names: set[str] = set()
        for i, node in enumerate(nodes):
            if node.name in names:
                raise ValueError(f"node {node.name!r} is declared twice (nodes[{i}])")
            names.add(node.name)
            for other in nodes[:i]:
                if node.pod_cidr.overlaps(other.pod_cidr):
                    raise ValueError(
                        f"podCIDR {node.pod_cidr} of {node.name} overlaps {other.pod_cidr} of {other.name}"
                    )
        return nodes

    def reference_errors(self) -> list[tuple[tuple[str | int, ...], str]]:
        """Problems between sections, as (key path, message): checked after the schema."""
        known = [n.name for n in self.nodes]
        problems: list[tuple[tuple[str | int, ...], str]] = [
            (("rollout", "canary"), f"unknown node {name!r}; nodes are {', '.join(known)}")
            for name in self.canary_names()
            if name not in known
        ]
        problems += [
            (("cluster", "serviceCIDR"),
             f"{self.cluster.service_cidr} overlaps podCIDR {n.pod_cidr} of {n.name}")
            for n in self.nodes
            if n.pod_cidr.overlaps(self.cluster.service_cidr)
        ]
        problems += [
            (("lab", "underlayCIDR"), f"{self.lab.underlay_cidr} overlaps podCIDR {n.pod_cidr} of {n.name}")
            for n in self.nodes
            if n.pod_cidr.overlaps(self.lab.underlay_cidr)
        ]
        return problems + self._external_host_errors() + self._address_errors()

    def _external_host_errors(self) -> list[tuple[tuple[str | int, ...], str]]:
        """Each external host once, outside the cluster's pods, services and underlay."""
        problems: list[tuple[tuple[str | int, ...], str]] = []
        inside = [(n.pod_cidr, f"podCIDR of {n.name}") for n in self.nodes] + [
            (self.cluster.service_cidr, "serviceCIDR"), (self.lab.underlay_cidr, "the lab's underlayCIDR")]
        first: dict[str, int] = {}
        for i, h in enumerate(self.lab.external_hosts):
            if h.name in first:
                problems.append((("lab", "externalHosts", i, "name"),
                                 f"{h.name} is already externalHosts[{first[h.name]}]"))
            first.setdefault(h.name, i)
            problems += [(("lab", "externalHosts", i, "address"),
                          f"{h.address} of external host {h.name} is inside the cluster ({where})")
                         for net, where in inside if h.address in net]
        return problems

    def _address_errors(self) -> list[tuple[tuple[str | int, ...], str]]:
        """A node address must be unique and outside every podCIDR and the serviceCIDR."""
        problems: list[tuple[tuple[str | int, ...], str]] = []
        seen: dict[IPv4Address, str] = {}
        for i, node in enumerate(self.nodes):
            addr = node.address
            if addr is None:
                continue
            where: tuple[str | int, ...] = ("nodes", i, "address")
            inside = [n for n in self.nodes if addr in n.pod_cidr]
            if inside:
                problems.append((where, f"{addr} of {node.name} is inside podCIDR {inside[0].pod_cidr} "
                                        f"of {inside[0].name}: use the node's underlay (InternalIP) address"))
            elif addr in self.cluster.service_cidr:
                cidr = self.cluster.service_cidr
                problems.append((where, f"{addr} of {node.name} is inside serviceCIDR {cidr}"))
            elif addr in seen:
                problems.append((where, f"{addr} of {node.name} is already the address of {seen[addr]}"))
            seen.setdefault(addr, node.name)
        return problems

    def canary_names(self) -> tuple[str, ...]:
        canary = self.rollout.canary
        if canary is None:
            return (self.nodes[0].name,)
        return (canary,) if isinstance(canary, str) else canary


class NodeConfig(Model):
    name: str
    pod_cidr: IPv4Network
    address: IPv4Address | None = None  # underlay; None: ask the lab (meshctl.underlay)


class Rollout(Model):
    canary: tuple[str, ...]
    batch_size: int = 1
    verify_window_s: float = 2.0
    drop_rate_threshold: float = 0.0  # drops per second beyond the predicted ones
    rollback: Literal["node", "all"] = "node"
    require_clean_audit: str | None = None  # a duration ("24h"); see RolloutSection


class DatapathSettings(Model):
    ipv6: Literal["drop", "pass"] = "drop"


class AgentsSettings(Model):
    """[agents] with its paths resolved against the repo."""

    port: int | None = None
    ca: Path | None = None
    cert: Path | None = None
    key: Path | None = None
    insecure: bool = False


class LabSettings(Model):
    underlay_cidr: IPv4Network = DEFAULT_UNDERLAY
    external_hosts: tuple[ExternalHost, ...] = ()


class LoadBalancerSettings(Model):
    """The resolved load-balancer settings compile and the lab read (desired.config.load_balancer)."""

    kube_proxy_replacement: bool = False
    mode: LoadBalancerMode = "snat"
    algorithm: LoadBalancerAlgorithm = "random"
    maglev_table_size: int = DEFAULT_MAGLEV_TABLE_SIZE
    maglev_hash_seed: str = DEFAULT_MAGLEV_SEED


class MeshConfig(Model):
    cluster: str
    service_cidr: IPv4Network = DEFAULT_SERVICE_CIDR
    nodes: tuple[NodeConfig, ...]
    policy_enforcement_mode: EnforcementMode = "default"
    state_dir: Path
    plans_dir: Path
    rollout: Rollout
    policy: PolicySection = PolicySection()
    datapath: DatapathSettings = DatapathSettings()
    lab: LabSettings = LabSettings()
    observability: ObservabilitySection = ObservabilitySection()
    load_balancer: LoadBalancerSettings = LoadBalancerSettings()
    encryption: EncryptionSection = EncryptionSection()
    inventory: InventorySection = InventorySection()
    apply: ApplySection = ApplySection()
    agents: AgentsSettings = AgentsSettings()
    dns: DnsSection = DnsSection()

    def node(self, name: str) -> NodeConfig | None:
        return next((n for n in self.nodes if n.name == name), None)

    @classmethod
    def from_file(cls, raw: ConfigFile, root: Path) -> MeshConfig:
        """Resolve defaults and paths (relative to the desired repo root)."""
        r = raw.rollout
        return cls(
            cluster=raw.cluster.name,
            nodes=tuple(NodeConfig(name=n.name, pod_cidr=n.pod_cidr, address=n.address) for n in raw.nodes),
            policy_enforcement_mode=raw.cluster.policy_enforcement_mode,
            state_dir=(root / (raw.state.dir if raw.state else "state")).resolve(),
            plans_dir=(root / (raw.plans.dir if raw.plans else "plans")).resolve(),
            rollout=Rollout(
                canary=raw.canary_names(), batch_size=r.batch_size, verify_window_s=r.verify_window,
                drop_rate_threshold=r.drop_rate_threshold, rollback=r.rollback,
                require_clean_audit=r.require_clean_audit,
            ),
            policy=raw.policy,
            datapath=DatapathSettings(ipv6=raw.datapath.ipv6),
            lab=LabSettings(underlay_cidr=raw.lab.underlay_cidr, external_hosts=raw.lab.external_hosts),
            observability=raw.observability,
            encryption=raw.encryption,
            inventory=raw.inventory,
            apply=raw.apply,
            agents=AgentsSettings(
                port=raw.agents.port, insecure=raw.agents.insecure,
                **{n: (root / p).resolve() for n in ("ca", "cert", "key") if (p := getattr(raw.agents, n))},
            ),
            service_cidr=raw.cluster.service_cidr,
            dns=raw.dns,
            load_balancer=LoadBalancerSettings(
                kube_proxy_replacement=raw.cluster.kube_proxy_replacement,
                mode=raw.load_balancer.mode, algorithm=raw.load_balancer.algorithm,
                maglev_table_size=raw.maglev.table_size, maglev_hash_seed=raw.maglev.hash_seed,
            ),
        )


__all__ = [
    "AgentsSection", "AgentsSettings", "ApplySection", "ConfigFile", "DatapathSettings", "DnsSection",
    "EncryptionSection",
    "ExternalHost",
    "InventorySection", "LabSettings",
    "LoadBalancerSettings",
    "MeshConfig", "NodeConfig", "ObservabilitySection", "Rollout",
]
