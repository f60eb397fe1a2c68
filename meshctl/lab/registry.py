"""The lab registry: what `lab up` built, so down, status, exec, probes and apply can find it.

One JSON file per cluster at /run/meshctl/lab/<cluster>.json, written atomically (temp file,
fsync, rename) and written BEFORE the kernel objects it names are created, so `lab down` can
clean up after a crash half-way through `lab up`. Addresses in it are kept across runs.
"""

from __future__ import annotations

import fcntl
import json
import os
import tempfile
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import asdict, dataclass, field
from ipaddress import IPv4Address, IPv4Network
from pathlib import Path
from typing import Any

from meshctl.errors import LabError

FORMAT_VERSION = 1


def run_dir() -> Path:
    """Where registries and server logs live (override with MESHCTL_LAB_DIR)."""
    return Path(os.environ.get("MESHCTL_LAB_DIR", "/run/meshctl/lab"))


def registry_path(cluster: str) -> Path:
    return run_dir() / f"{cluster}.json"


def log_dir(cluster: str) -> Path:
    return run_dir() / cluster


@dataclass
class NodeRecord:
    name: str
    netns: str
    pod_cidr: str
    underlay_ip: str
    underlay_port: str  # the node's bridge port in the underlay netns

    @property
    def gateway(self) -> IPv4Address:
        return IPv4Network(self.pod_cidr).network_address + 1


@dataclass
class PodRecord:
    key: str  # "namespace/name"
    node: str
    netns: str
    ip: str
    veth: str  # node-side veth in the node netns
    tcp_ports: list[int] = field(default_factory=list)
    udp_ports: list[int] = field(default_factory=list)
    server_pid: int | None = None
    dns: bool = False  # kube-dns: its server answers DNS on port 53 from the lab's zone
    bind: str = ""  # an external host: its server binds this address only (hosts share a netns)

    @property
    def address(self) -> IPv4Address:
        return IPv4Address(self.ip)


@dataclass
class ExternalRecord:
    """The external client: a netns on the underlay bridge, routing service addresses via a node."""

    netns: str
    underlay_ip: str
    underlay_port: str  # its bridge port in the underlay netns
    via_node: str  # the node whose underlay address the routes use
    routes: list[str] = field(default_factory=list)  # service addresses (CIDRs) routed via that node
    # [[lab.externalHosts]]: addresses of this netns with a server each (key "external/NAME")
    hosts: list[PodRecord] = field(default_factory=list)


@dataclass
class Registry:
    cluster: str
    underlay_netns: str
    underlay_cidr: str
    nodes: dict[str, NodeRecord] = field(default_factory=dict)
    pods: dict[str, PodRecord] = field(default_factory=dict)
    datapath: bool = False  # programs attached on pod veths
    format_version: int = FORMAT_VERSION
    external: ExternalRecord | None = None  # only with kubeProxyReplacement

    def netns_names(self) -> list[str]:
        return [p.netns for p in self.pods.values()] + [n.netns for n in self.nodes.values()] + (
            [self.external.netns] if self.external else []) + [self.underlay_netns]


_LOADED: dict[Path, tuple[tuple[int, int, int], Registry]] = {}  # path -> (file stamp, registry)


def load(cluster: str) -> Registry | None:
    """The cluster's registry, or None when no lab of that name exists.

    Read once per version of the file (20,000 pods make 5 MB of JSON, and an apply looks pods up
    once per probe): the registry returned is shared, so callers read it and never change it
    (`up` builds a new one to save)."""
    path = registry_path(cluster)
    try:
        st = path.stat()
        stamp = (st.st_mtime_ns, st.st_size, st.st_ino)
        hit = _LOADED.get(path)
        if hit is not None and hit[0] == stamp:
            return hit[1]
        raw = json.loads(path.read_text())
    except FileNotFoundError:
        _LOADED.pop(path, None)
        return None
    except (OSError, ValueError) as err:
        raise LabError(f"lab registry {path} is unreadable ({err}); `meshctl lab down` removes it") from err
    if raw.get("format_version") != FORMAT_VERSION:
        raise LabError(f"lab registry {path} has format {raw.get('format_version')}, "
                       f"expected {FORMAT_VERSION}")
    reg = _registry(raw)
    _LOADED[path] = (stamp, reg)
    return reg


def _registry(raw: dict[str, Any]) -> Registry:
    return Registry(
        cluster=raw["cluster"], underlay_netns=raw["underlay_netns"], underlay_cidr=raw["underlay_cidr"],
        nodes={k: NodeRecord(**v) for k, v in raw["nodes"].items()},
        pods={k: PodRecord(**v) for k, v in raw["pods"].items()},
        datapath=raw.get("datapath", False),
        external=_external(raw["external"]) if raw.get("external") else None,
    )


def _external(raw: dict[str, Any]) -> ExternalRecord:
    return ExternalRecord(**{**raw, "hosts": [PodRecord(**h) for h in raw.get("hosts", ())]})


def require(cluster: str) -> Registry:
    reg = load(cluster)
    if reg is None:
        raise LabError(f"no lab named {cluster!r} is up (run `meshctl lab up`)")
    return reg


def save(reg: Registry) -> None:
    """Atomic write: a reader sees the old or the new registry, never half of one."""
    path = registry_path(reg.cluster)
    path.parent.mkdir(parents=True, exist_ok=True)
    body = json.dumps(asdict(reg), indent=2, sort_keys=True)
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".{reg.cluster}.", suffix=".tmp")
    try:
        with os.fdopen(fd, "w") as f:
            f.write(body)
            f.flush()
            os.fsync(f.fileno())
        os.replace(tmp, path)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise
    dfd = os.open(path.parent, os.O_RDONLY)
    try:
        os.fsync(dfd)
    finally:
        os.close(dfd)


@contextmanager
def locked(cluster: str) -> Iterator[None]:
    """Serialise `lab up`/`lab down` of one cluster across processes (flock on a lock file)."""
    with file_lock(run_dir() / f".{cluster}.lock"):
        yield


@contextmanager
def file_lock(path: Path) -> Iterator[None]:
    """An exclusive flock on `path` (made if missing) for the block: one process at a time."""
    path.parent.mkdir(parents=True, exist_ok=True)
    fd = os.open(path, os.O_RDWR | os.O_CREAT, 0o600)
    try:
        fcntl.flock(fd, fcntl.LOCK_EX)
        yield
    finally:
        os.close(fd)


def delete(cluster: str) -> None:
    registry_path(cluster).unlink(missing_ok=True)


def clusters() -> list[str]:
    """Names of every lab with a registry on this machine."""
    d = run_dir()
    if not d.is_dir():
        return []
    return sorted(p.stem for p in d.glob("*.json"))


def pod_ips(cluster: str) -> dict[str, IPv4Address]:
    """"ns/pod" -> IP of every pod of the lab (for desired.with_pod_ips before compiling)."""
    reg = load(cluster)
    if reg is None:
        return {}
    return {k: p.address for k, p in reg.pods.items()}


def lab_nodes(cluster: str) -> dict[str, NodeRecord]:
    """node name -> record (netns, pod CIDR, underlay address) of a lab that is up."""
    return dict(require(cluster).nodes)


def lab_pods(cluster: str) -> dict[str, PodRecord]:
    """"ns/pod" -> record (netns, IP, node, node-side veth, server pid) of a lab that is up."""
    return dict(require(cluster).pods)


def pod(cluster: str, key: str) -> PodRecord:
    reg = require(cluster)
    try:
        return reg.pods[key]
    except KeyError:
        raise LabError(f"lab {cluster!r} has no pod {key!r} (pods: {', '.join(sorted(reg.pods))})") from None
