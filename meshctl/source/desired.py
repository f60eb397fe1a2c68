"""DesiredState: everything a desired-state repo declares, loaded and cross-checked.

`load_desired(root)` reads a directory; `load_desired(root, ref)` reads the git repository at
`root` at revision `ref` straight from the object store (no checkout), so a plan can be made for
any commit. Documents are validated one by one (models), then against each other here: unique
names, pods on declared nodes and namespaces, pod IPs inside their node's podCIDR, checks that
name existing pods.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from ipaddress import IPv4Address
from pathlib import Path
from typing import TYPE_CHECKING

from meshctl.errors import SourceError
from meshctl.model.base import SourceRef
from meshctl.model.check import ConnectivityCheck
from meshctl.model.config import MeshConfig
from meshctl.model.inventory import Namespace, Pod
from meshctl.model.service import Service
from meshctl.source.config import CONFIG_FILE, parse_config
from meshctl.source.documents import Documents, Policy, add_document
from meshctl.source.services import resolve_services
from meshctl.source.tree import YAML_SUFFIXES, DirTree, GitTree, SourceTree
from meshctl.source.worktree import worktree_commit
from meshctl.source.yamlcache import open_cache
from meshctl.source.yamlines import format_path

if TYPE_CHECKING:
    import git


@dataclass(frozen=True)
class DesiredState:
    root: Path
    commit: str | None
    dirty: bool
    config: MeshConfig
    namespaces: tuple[Namespace, ...]
    pods: tuple[Pod, ...]
    policies: tuple[Policy, ...]
    checks: tuple[ConnectivityCheck, ...]
    services: tuple[Service, ...] = ()  # clusterIP and nodePorts resolved (meshctl.source.services)
    # (file, line) of each document -> its field path -> line index, so the compiler can name the
    # line of one rule (spec.ingress[1]) rather than the document's first line
    lines: Mapping[tuple[str, int], Mapping[tuple[str | int, ...], int]] = dataclasses.field(
        default_factory=dict, compare=False, repr=False
    )

    def pod(self, key: str) -> Pod | None:
        """The pod named "namespace/name", if declared."""
        return next((p for p in self.pods if p.key == key), None)

    def namespace(self, name: str) -> Namespace | None:
        return next((n for n in self.namespaces if n.name == name), None)

    def with_pod_ips(self, mapping: Mapping[str, IPv4Address]) -> DesiredState:
        """Fill pod_ip of the "ns/pod" keys in `mapping` that have none (the lab assigns IPs)."""
        pods = tuple(
            p.model_copy(update={"pod_ip": IPv4Address(mapping[p.key])})
            if p.pod_ip is None and p.key in mapping
            else p
            for p in self.pods
        )
        return dataclasses.replace(self, pods=pods)

    def with_node_addresses(self, mapping: Mapping[str, IPv4Address]) -> DesiredState:
        """Fill the underlay address of the config's nodes that name none (the lab knows its own)."""
        nodes = [
            n.model_copy(update={"address": IPv4Address(mapping[n.name])})
            if n.address is None and n.name in mapping
            else n
            for n in self.config.nodes
        ]
        if all(a is b for a, b in zip(nodes, self.config.nodes, strict=True)):
            return self
        return dataclasses.replace(self, config=self.config.model_copy(update={"nodes": nodes}))


def load_desired(root: Path, ref: str | None = None) -> DesiredState:
    """Load the desired state at `root` (a directory, or with `ref` a git revision of it)."""
    root = Path(root).resolve()
    if ref is None:
        if not root.is_dir():
            raise SourceError(str(root), None, "", "desired-state directory not found")
        commit, dirty = worktree_commit(root)
        return _load(DirTree(root), root, commit, dirty)
    import git

    repo, subdir = _open_repo(root)
    try:
        target = repo.commit(ref)
    except (git.BadName, git.BadObject, ValueError) as err:
        raise SourceError(str(root), None, "", f"unknown git revision {ref!r} ({err})") from None
    return _load(GitTree(target, subdir), root, target.hexsha, False)


def _open_repo(root: Path) -> tuple[git.Repo, str]:
    import git

    try:
        repo = git.Repo(root, search_parent_directories=True)
    except (git.InvalidGitRepositoryError, git.NoSuchPathError):
        raise SourceError(str(root), None, "", "not in a git repository (needed for a revision)") from None
    top = Path(repo.working_tree_dir or root).resolve()
    return repo, root.relative_to(top).as_posix() if root != top else ""


def _load(tree: SourceTree, root: Path, commit: str | None, dirty: bool) -> DesiredState:
    text = tree.read(CONFIG_FILE)
    if text is None:
        raise SourceError(CONFIG_FILE, None, "", "missing: a desired-state repo has meshctl.toml at its root")
    config = parse_config(text, root)
    docs = Documents()
    cache = open_cache(root)
    for rel in tree.files():
        if rel.endswith(YAML_SUFFIXES):
            for doc in cache.documents(tree.read(rel) or "", rel):
                add_document(doc, docs)
    desired = build_desired(config, docs, root, commit, dirty)
    cache.save()  # only a repo that loads: an error above leaves the cache as it was
    return desired


def build_desired(
    config: MeshConfig, docs: Documents, root: Path, commit: str | None, dirty: bool
) -> DesiredState:
    """Cross-check the documents against each other and the config, and resolve services."""
    _cross_check(config, docs)
    services = resolve_services(docs.services, config.service_cidr, _service_error(docs))
    return DesiredState(
        root=root, commit=commit, dirty=dirty, config=config,
        namespaces=tuple(docs.namespaces), pods=tuple(docs.pods),
        policies=tuple(docs.policies), checks=tuple(docs.checks), services=tuple(services),
        lines={key: doc.lines for key, doc in docs.yaml.items()},
    )


def _service_error(docs: Documents) -> Callable[[Service, tuple[str | int, ...], str], SourceError]:
    def error(svc: Service, path: tuple[str | int, ...], message: str) -> SourceError:
        doc = docs.yaml.get((svc.source.file, svc.source.line))
        line = doc.line_of(path) if doc else svc.source.line
        return SourceError(svc.source.file, line, format_path(path), message)

    return error


def _cross_check(config: MeshConfig, docs: Documents) -> None:
    def err(source: SourceRef, path: str, message: str) -> SourceError:
        doc = docs.yaml.get((source.file, source.line))
        line = doc.line_of(tuple(path.split("."))) if doc else source.line
        return SourceError(source.file, line, path, message)

    seen: dict[tuple[str, str, str], SourceRef] = {}

    def unique(kind: str, namespace: str, name: str, source: SourceRef) -> None:
        key = (kind, namespace, name)
        if key in seen:
            what = f"{namespace}/{name}" if namespace else name
            raise err(source, "metadata.name", f"duplicate {kind} {what} (first defined at {seen[key]})")
        seen[key] = source

    for ns in docs.namespaces:
        unique("Namespace", "", ns.name, ns.source)
    for policy in docs.policies:
        unique(policy.kind, policy.metadata.namespace or "", policy.metadata.name, policy.source)
    for check in docs.checks:
        unique("ConnectivityCheck", "", check.name, check.source)
    for svc in docs.services:
        unique("Service", svc.namespace, svc.name, svc.source)
        if svc.namespace not in {ns.name for ns in docs.namespaces}:
            raise err(svc.source, "metadata.namespace",
                      f"namespace {svc.namespace!r} is not declared: add a v1 Namespace document")

    namespaces = {ns.name for ns in docs.namespaces}
    addresses: dict[IPv4Address, Pod] = {}
    for pod in docs.pods:
        unique("Pod", pod.namespace, pod.name, pod.source)
        if pod.namespace not in namespaces:
            raise err(pod.source, "metadata.namespace",
                       f"namespace {pod.namespace!r} is not declared: add a v1 Namespace document")
        node = config.node(pod.node_name)
        if node is None:
            known = ", ".join(n.name for n in config.nodes)
            raise err(pod.source, "spec.nodeName", f"unknown node {pod.node_name!r}; nodes are {known}")
        if pod.pod_ip is not None:
            if pod.pod_ip not in node.pod_cidr:
                raise err(pod.source, "status.podIP",
                           f"{pod.pod_ip} is outside podCIDR {node.pod_cidr} of node {node.name}")
            if pod.pod_ip in addresses:
                other = addresses[pod.pod_ip].key
                raise err(pod.source, "status.podIP", f"{pod.pod_ip} is also the IP of {other}")
            addresses[pod.pod_ip] = pod

    pods = {pod.key for pod in docs.pods}
    for check in docs.checks:
        for field, ref in (("spec.from", check.from_), ("spec.to", check.to)):
            if "/" in ref and ref not in pods:
                raise err(check.source, field, f"no pod {ref} is declared")
