"""Inventory from a Kubernetes cluster: Namespaces, Pods, Services and Nodes via the API server.

Chosen by `[inventory] source = "kubernetes"` in meshctl.toml (with optional `kubeconfig` and
`context`; without a kubeconfig, $KUBECONFIG or ~/.kube/config, else the in-cluster service
account). Policies always come from the repo; only the inventory is the cluster's. Lists are
paginated (limit + continue) so big clusters never arrive in one response. Pods without an IP
yet are kept (pod_ip None: compile gives them no endpoint until they have one); pods not yet
scheduled, finished pods and hostNetwork pods (which are the node, not endpoints) are skipped.
Nodes give the underlay address (status.addresses InternalIP) of [[nodes]] that lack one.

Tested against a real HTTP server speaking the list API (tests/unit/kubernetes), not a cluster.
"""

from __future__ import annotations

import dataclasses
import json
import os
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from ipaddress import IPv4Address, IPv4Network, ip_address
from pathlib import Path
from typing import TYPE_CHECKING, Any

from meshctl.errors import MeshctlError
from meshctl.model.base import SourceRef
from meshctl.model.inventory import ContainerPort, Namespace, Pod

if TYPE_CHECKING:
    from meshctl.model.config import InventorySection
    from meshctl.source.desired import DesiredState

DEFAULT_PAGE_SIZE = 500
SKIPPED_PHASES = ("Succeeded", "Failed")


class KubernetesError(MeshctlError):
    """The cluster cannot be reached or answered something unusable."""


@dataclass(frozen=True)
class KubeNode:
    name: str
    pod_cidr: IPv4Network | None
    internal_ip: IPv4Address | None
    labels: dict[str, str]


@dataclass(frozen=True)
class KubeServicePort:
    name: str | None
    port: int
    protocol: str
    target_port: int | str | None


@dataclass(frozen=True)
class KubeService:
    namespace: str
    name: str
    type: str
    cluster_ip: IPv4Address | None  # None: headless or not allocated
    selector: dict[str, str]
    ports: tuple[KubeServicePort, ...]


@dataclass(frozen=True)
class KubeInventory:
    namespaces: tuple[Namespace, ...]
    pods: tuple[Pod, ...]
    services: tuple[KubeService, ...]
    nodes: tuple[KubeNode, ...]
    skipped: tuple[str, ...] = ()  # "ns/pod: why", for the log
    revision: int = 0  # the pod list's resourceVersion (the cluster's version of its pods)

    def apply_to(self, desired: DesiredState) -> DesiredState:
        """The desired state with the cluster's namespaces and pods instead of the repo's, and
        each [[nodes]] without an `address` given its Node's InternalIP (meshctl.toml wins)."""
        internal = {n.name: n.internal_ip for n in self.nodes if n.internal_ip is not None}
        config = desired.config
        if any(n.address is None and n.name in internal for n in config.nodes):
            nodes = tuple(
                n.model_copy(update={"address": internal[n.name]})
                if n.address is None and n.name in internal else n
                for n in config.nodes
            )
            config = config.model_copy(update={"nodes": nodes})
        return dataclasses.replace(desired, config=config, namespaces=self.namespaces, pods=self.pods)


def api_client(kubeconfig: str | None = None, context: str | None = None) -> Any:
    """A kubernetes ApiClient from a kubeconfig (explicit, $KUBECONFIG, ~/.kube/config) or in-cluster."""
    from kubernetes import client, config

    path = kubeconfig or os.environ.get("KUBECONFIG") or None
    if path is None and Path(config.KUBE_CONFIG_DEFAULT_LOCATION).expanduser().exists():
        path = str(Path(config.KUBE_CONFIG_DEFAULT_LOCATION).expanduser())
    try:
        if path is not None:
            return config.new_client_from_config(config_file=path, context=context)
        configuration = client.Configuration()
        config.load_incluster_config(client_configuration=configuration)
        return client.ApiClient(configuration)
    except config.ConfigException as err:
        where = path or "in-cluster config"
        raise KubernetesError(f"kubernetes: cannot load {where}: {err}") from None
    except OSError as err:
        raise KubernetesError(f"kubernetes: cannot read kubeconfig {path}: {err}") from None


def list_all(
    call: Callable[..., Any], what: str, page_size: int = DEFAULT_PAGE_SIZE,
    versions: list[str] | None = None,
) -> Iterator[dict[str, Any]]:
    """Every item of one list endpoint, page by page (limit + metadata.continue), as raw JSON;
    the list's resourceVersion (to watch from) is appended to `versions`."""
    from kubernetes.client.exceptions import ApiException
    from urllib3.exceptions import HTTPError

    token: str | None = None
    while True:
        try:
            resp = call(limit=page_size, _continue=token, _preload_content=False)
            body = json.loads(resp.data)
        except ApiException as err:
            if err.status == 410:
                raise KubernetesError(
                    f"kubernetes: listing {what}: the continue token expired (410 Gone); run again"
                ) from None
            raise KubernetesError(f"kubernetes: listing {what}: HTTP {err.status} {err.reason}") from None
        except (HTTPError, OSError) as err:
            raise KubernetesError(f"kubernetes: listing {what}: {err}") from None
        except ValueError as err:
            raise KubernetesError(f"kubernetes: listing {what}: not JSON ({err})") from None
        yield from body.get("items") or ()
        meta = body.get("metadata") or {}
        token = meta.get("continue") or None
        if token is None:
            if versions is not None:
                versions.append(str(meta.get("resourceVersion") or ""))
            return


def _ipv4(value: Any) -> IPv4Address | None:
    try:
        addr = ip_address(value)
    except (TypeError, ValueError):
        return None
    return addr if isinstance(addr, IPv4Address) else None


def _ref(cluster: str, kind: str, key: str) -> SourceRef:
    return SourceRef(file=f"kubernetes:{cluster}/{kind}/{key}", line=0)


def parse_namespace(item: dict[str, Any], cluster: str) -> Namespace:
    meta = item.get("metadata") or {}
    return Namespace(
        name=meta["name"],
        labels=dict(meta.get("labels") or {}),
        source=_ref(cluster, "namespaces", meta["name"]),
    )


def parse_pod(item: dict[str, Any], cluster: str) -> Pod | str:
    """A Pod, or why it is skipped."""
    meta, spec, status = item.get("metadata") or {}, item.get("spec") or {}, item.get("status") or {}
    key = f"{meta.get('namespace', 'default')}/{meta.get('name')}"
    if not spec.get("nodeName"):
        return f"{key}: not scheduled yet"
    if spec.get("hostNetwork"):
        return f"{key}: hostNetwork (part of the node, not an endpoint)"
    if status.get("phase") in SKIPPED_PHASES:
        return f"{key}: {status['phase']}"
    ip = _ipv4(status.get("podIP"))
    if ip is None:  # dual stack: podIP may be the IPv6 one
        ip = next((a for a in (_ipv4(p.get("ip")) for p in status.get("podIPs") or ()) if a), None)
    ports = tuple(
        ContainerPort(
            name=p.get("name"), container_port=p["containerPort"], protocol=p.get("protocol", "TCP")
        )
        for c in spec.get("containers") or ()
        for p in c.get("ports") or ()
    )
    return Pod(
        namespace=meta.get("namespace", "default"),
        name=meta["name"],
        labels=dict(meta.get("labels") or {}),
        node_name=spec["nodeName"],
        ports=ports,
        pod_ip=ip,
        source=_ref(cluster, "pods", key),
    )


def parse_service(item: dict[str, Any]) -> KubeService:
    meta, spec = item.get("metadata") or {}, item.get("spec") or {}
    ports = tuple(
        KubeServicePort(p.get("name"), int(p["port"]), p.get("protocol", "TCP"), p.get("targetPort"))
        for p in spec.get("ports") or ()
    )
    return KubeService(
        meta.get("namespace", "default"),
        meta["name"],
        spec.get("type", "ClusterIP"),
        _ipv4(spec.get("clusterIP")),
        dict(spec.get("selector") or {}),
        ports,
    )


def parse_node(item: dict[str, Any]) -> KubeNode:
    meta, spec, status = item.get("metadata") or {}, item.get("spec") or {}, item.get("status") or {}
    cidrs = [spec.get("podCIDR"), *(spec.get("podCIDRs") or ())]
    pod_cidr = None
    for cidr in cidrs:
        try:
            net = IPv4Network(cidr) if cidr else None
        except ValueError:
            net = None
        if net is not None:
            pod_cidr = net
            break
    internal = next(
        (
            _ipv4(a.get("address"))
            for a in status.get("addresses") or ()
            if a.get("type") == "InternalIP" and _ipv4(a.get("address"))
        ),
        None,
    )
    return KubeNode(meta["name"], pod_cidr, internal, dict(meta.get("labels") or {}))


def load_inventory(api: Any, cluster: str = "", page_size: int = DEFAULT_PAGE_SIZE) -> KubeInventory:
    """Read the four lists through a kubernetes ApiClient."""
    from kubernetes import client

    core = client.CoreV1Api(api)
    namespaces = tuple(
        parse_namespace(i, cluster) for i in list_all(core.list_namespace, "namespaces", page_size)
    )
    pods: list[Pod] = []
    skipped: list[str] = []
    versions: list[str] = []
    for item in list_all(core.list_pod_for_all_namespaces, "pods", page_size, versions):
        parsed = parse_pod(item, cluster)
        (pods.append if isinstance(parsed, Pod) else skipped.append)(parsed)  # type: ignore[operator]
    services = tuple(
        parse_service(i) for i in list_all(core.list_service_for_all_namespaces, "services", page_size)
    )
    nodes = tuple(parse_node(i) for i in list_all(core.list_node, "nodes", page_size))
    pods.sort(key=lambda p: p.key)
    version = versions[-1] if versions else ""
    return KubeInventory(
        tuple(sorted(namespaces, key=lambda n: n.name)), tuple(pods), services, nodes, tuple(skipped),
        int(version) if version.isdigit() else 0,
    )


def section_client(section: InventorySection, root: Path) -> Any:
    """The ApiClient `[inventory]` names (its kubeconfig relative to the repo)."""
    kubeconfig = section.kubeconfig
    if kubeconfig is not None:
        kubeconfig = str((Path(root) / Path(kubeconfig).expanduser()).resolve())
    return api_client(kubeconfig, section.context)


def inventory_from_config(
    section: InventorySection, root: Path, cluster: str = "", page_size: int = DEFAULT_PAGE_SIZE
) -> KubeInventory:
    """`[inventory]` of meshctl.toml -> the cluster's inventory (kubeconfig relative to the repo)."""
    api = section_client(section, root)
    try:
        return load_inventory(api, cluster, page_size)
    finally:
        api.close()
