"""Kubernetes YAML without meshctl.toml, as kubectl exports it: an implicit one-node cluster.

`kubectl get ns,pods,netpol,cnp,ccnp -A -o yaml` gives Namespaces, Pods with status.podIP and
policies, but no cluster. A verdict does not depend on where a pod runs, so the implicit cluster
has one node holding every pod (spec.nodeName is ignored, and may be absent) and a podCIDR that
covers every pod address. Pods that are not endpoints are skipped, as the kubernetes inventory
does: hostNetwork pods share their node's address, finished pods have given theirs back.
Namespaces named by pods or policies but not exported are assumed, with no labels.
Only `policy trace` reads this; plan and apply need a real meshctl.toml.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Iterable
from dataclasses import dataclass
from ipaddress import IPv4Address, IPv4Network
from pathlib import Path
from typing import Any

from meshctl.errors import SourceError
from meshctl.model.base import SourceRef
from meshctl.model.config import DEFAULT_SERVICE_CIDR, MeshConfig, NodeConfig, Rollout
from meshctl.model.inventory import Namespace
from meshctl.source.desired import DesiredState, build_desired
from meshctl.source.documents import Documents, add_document, is_list, list_items
from meshctl.source.kubernetes import SKIPPED_PHASES
from meshctl.source.tree import YAML_SUFFIXES, DirTree
from meshctl.source.yamlines import YamlDoc, load_documents

IMPLICIT_CLUSTER = "implicit"
IMPLICIT_NODE = "node-1"
DEFAULT_POD_CIDR = IPv4Network("10.244.0.0/16")  # only when no pod has an address
PLACEHOLDER_START = 10  # compile.trace.placeholder_ips numbers address-less pods from .10


@dataclass(frozen=True)
class PlainDesired:
    """The desired state of the implicit cluster and one line that says what was assumed."""

    desired: DesiredState
    note: str


def load_plain_dir(root: Path) -> PlainDesired:
    """Every YAML file under `root` (a directory without meshctl.toml)."""
    root = Path(root).resolve()
    if not root.is_dir():
        raise SourceError(str(root), None, "", "directory not found")
    tree = DirTree(root)
    texts = ((rel, tree.read(rel) or "") for rel in tree.files() if rel.endswith(YAML_SUFFIXES))
    return _load(texts, root, str(root))


def load_plain_file(path: Path) -> PlainDesired:
    """One YAML file, e.g. the saved output of `kubectl get ... -o yaml`."""
    path = Path(path).resolve()
    text = DirTree(path.parent).read(path.name)
    if text is None:
        raise SourceError(str(path), None, "", "file not found")
    return load_plain_text(text, path.name, path.parent)


def load_plain_text(text: str, name: str = "<stdin>", root: Path | None = None) -> PlainDesired:
    """One YAML stream, e.g. `kubectl get ... -o yaml` piped in; errors name it `name`."""
    return _load([(name, text)], Path(root or Path.cwd()).resolve(), name)


def _load(texts: Iterable[tuple[str, str]], root: Path, label: str) -> PlainDesired:
    docs = Documents()
    skipped: dict[str, int] = {}
    for rel, text in texts:
        for doc in load_documents(text, rel):
            for one in _flatten(doc):
                why = _not_an_endpoint(one.data)
                if why:
                    skipped[why] = skipped.get(why, 0) + 1
                    continue
                add_document(_on_implicit_node(one), docs)
    assumed = _assume_namespaces(docs)
    config = implicit_config(docs, root)
    desired = build_desired(config, docs, root, None, False)
    return PlainDesired(desired, _note(label, desired, config, skipped, assumed))


def _flatten(doc: YamlDoc) -> list[YamlDoc]:
    if not is_list(doc.data):
        return [doc]
    return [leaf for item in list_items(doc) for leaf in _flatten(item)]


def _not_an_endpoint(data: Any) -> str | None:
    """Why a Pod document is no endpoint ("hostNetwork", "Succeeded"), or None."""
    if not isinstance(data, dict) or data.get("kind") != "Pod":
        return None
    spec, status = data.get("spec"), data.get("status")
    if isinstance(spec, dict) and spec.get("hostNetwork") is True:
        return "hostNetwork"
    if isinstance(status, dict) and status.get("phase") in SKIPPED_PHASES:
        return str(status["phase"])
    return None


def _on_implicit_node(doc: YamlDoc) -> YamlDoc:
    data = doc.data
    if isinstance(data, dict) and data.get("kind") == "Pod" and isinstance(data.get("spec"), dict):
        data = {**data, "spec": {**data["spec"], "nodeName": IMPLICIT_NODE}}
        return dataclasses.replace(doc, data=data)
    return doc


def _assume_namespaces(docs: Documents) -> list[str]:
    """Add an unlabelled Namespace for each namespace used but not declared; their names."""
    declared = {ns.name for ns in docs.namespaces}
    used: dict[str, SourceRef] = {}
    for pod in docs.pods:
        used.setdefault(pod.namespace, pod.source)
    for policy in docs.policies:
        if policy.metadata.namespace:
            used.setdefault(policy.metadata.namespace, policy.source)
    for svc in docs.services:
        used.setdefault(svc.namespace, svc.source)
    assumed = sorted(set(used) - declared)
    docs.namespaces.extend(Namespace(name=name, source=used[name]) for name in assumed)
    return assumed


def covering(addresses: Iterable[IPv4Address], room: int) -> IPv4Network:
    """The smallest network holding every address with `room` free host numbers above .10."""
    addrs = sorted(set(addresses))
    if not addrs:
        net = DEFAULT_POD_CIDR
        while net.num_addresses < room + PLACEHOLDER_START + 2 and net.prefixlen > 0:
            net = net.supernet()
        return net
    net = IPv4Network((addrs[0], 32))
    need = len(addrs) + room + PLACEHOLDER_START + 2
    while net.prefixlen > 0 and (addrs[-1] not in net or (room and net.num_addresses < need)):
        net = net.supernet()
    return net


def implicit_config(docs: Documents, root: Path) -> MeshConfig:
    """One node whose podCIDR covers every pod address (and room for pods without one)."""
    ips = [p.pod_ip for p in docs.pods if p.pod_ip is not None]
    missing = sum(1 for p in docs.pods if p.pod_ip is None)
    pod_cidr = covering(ips, missing)
    cluster_ips = [s.cluster_ip for s in docs.services if s.cluster_ip is not None]
    unallocated = sum(1 for s in docs.services if s.cluster_ip is None and not s.headless)
    service_cidr = covering(cluster_ips, unallocated + 1) if cluster_ips else DEFAULT_SERVICE_CIDR
    return MeshConfig(
        cluster=IMPLICIT_CLUSTER,
        service_cidr=service_cidr,
        nodes=(NodeConfig(name=IMPLICIT_NODE, pod_cidr=pod_cidr),),
        state_dir=root / "state",
        plans_dir=root / "plans",
        rollout=Rollout(canary=(IMPLICIT_NODE,)),
    )


def _note(label: str, desired: DesiredState, config: MeshConfig, skipped: dict[str, int],
          assumed: list[str]) -> str:
    pods = len(desired.pods)
    text = (f"{label}: no meshctl.toml, tracing on an implicit one-node cluster "
            f"({pods} pod{'' if pods == 1 else 's'}, podCIDR {config.nodes[0].pod_cidr})")
    unaddressed = sum(1 for p in desired.pods if p.pod_ip is None)
    if unaddressed:
        text += (f"; {unaddressed} pod{' has' if unaddressed == 1 else 's have'} no status.podIP "
                 "(traced at a placeholder address)")
    if skipped:
        counts = sorted(skipped.items())
        text += "; skipped " + ", ".join(f"{n} {why} pod{'' if n == 1 else 's'}" for why, n in counts)
    if assumed:
        text += "; namespaces without a Namespace document, assumed unlabelled: " + ", ".join(assumed)
    return text
