"""`lab pod add` and `lab pod delete`: churn the lab's pods the way a cluster does, without a plan.

A pod is added as the kubelet and the CNI add one: its netns and veth, its server, the datapath
program on its veth, then the pod in the lab's inventory store (which gives a new label set its
identity). The node agents follow the store (meshctl.agentapi.endpoints): the pod's node gives it
its endpoint and policy, every node its ipcache entry. `add` returns once every agent that holds
an intent has caught up with the new revision, as the CNI returns once the endpoint exists.
Delete goes the other way: out of the store, the agents drop the endpoint, then the netns goes.
"""

from __future__ import annotations

import copy
import time
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from ipaddress import IPv4Address, IPv4Network
from pathlib import Path
from typing import Any

from meshctl.agentapi.endpoints import INTENT_FILE, agent_dir, synced_revision
from meshctl.errors import LabError
from meshctl.lab import datapath, inventory, names, network, registry, servers
from meshctl.lab.inventory import StoredPod
from meshctl.lab.registry import PodRecord
from meshctl.model.base import check_dns_label
from meshctl.model.inventory import Namespace, Pod

SYNC_TIMEOUT_S = 10.0


@dataclass(frozen=True)
class PodChange:
    key: str
    node: str
    ip: str
    revision: int
    waited_s: float
    lagging: tuple[str, ...]  # nodes whose agent had not caught up within the timeout


def parse_key(key: str) -> tuple[str, str]:
    namespace, sep, name = key.partition("/")
    if not sep:
        raise LabError(f"{key!r}: give the pod as NAMESPACE/NAME")
    for part in (namespace, name):
        try:
            check_dns_label(part)
        except ValueError as err:
            raise LabError(f"{key!r}: {err}") from None
    return namespace, name


def parse_labels(labels: Sequence[str]) -> dict[str, str]:
    out = {}
    for text in labels:
        k, sep, v = text.partition("=")
        if not sep or not k:
            raise LabError(f"--label {text!r}: expected KEY=VALUE")
        out[k] = v
    return out


def parse_ports(ports: Sequence[str]) -> list[list[Any]]:
    """["8080/TCP", "53/udp", "http=80/TCP"] -> [[name or None, port, protocol]]."""
    out: list[list[Any]] = []
    for text in ports:
        name, _, rest = text.rpartition("=")
        number, _, proto = rest.partition("/")
        proto = (proto or "TCP").upper()
        if not number.isdigit() or not 0 < int(number) < 65536 or proto not in ("TCP", "UDP"):
            raise LabError(f"--port {text!r}: expected PORT/TCP or PORT/UDP (optionally NAME=PORT/PROTO)")
        out.append([name or None, int(number), proto])
    return out


def _free_ip(cidr: IPv4Network, taken: set[IPv4Address]) -> IPv4Address:
    gateway = cidr.network_address + 1
    for ip in cidr.hosts():
        if ip != gateway and ip not in taken:
            return ip
    raise LabError(f"pod CIDR {cidr} is full")


def add_pod(state_dir: Path, cluster: str, key: str, node: str, labels: Mapping[str, str],
            ports: Sequence[Sequence[Any]], timeout: float = SYNC_TIMEOUT_S) -> PodChange:
    namespace, _ = parse_key(key)
    with registry.locked(cluster):
        reg = copy.deepcopy(registry.require(cluster))  # the loaded registry is shared: copy to change
        store = _store(cluster)
        if node not in reg.nodes:
            raise LabError(f"--node {node}: not a node of lab {cluster} ({', '.join(sorted(reg.nodes))})")
        if key in reg.pods or any(r.key == key for r in store.rows):
            raise LabError(f"pod {key} exists already (`meshctl lab pod delete {key}` first)")
        if namespace not in {ns.name for ns in store.namespaces}:
            known = ", ".join(sorted(ns.name for ns in store.namespaces))
            raise LabError(f"namespace {namespace!r} is not in the lab's inventory ({known})")
        rec_node = reg.nodes[node]
        taken = {p.address for p in reg.pods.values()}
        ip = _free_ip(IPv4Network(rec_node.pod_cidr), taken)
        tcp = sorted({int(p[1]) for p in ports if p[2] == "TCP"})
        udp = sorted({int(p[1]) for p in ports if p[2] == "UDP"})
        rec = PodRecord(key=key, node=node, netns=names.pod_netns(cluster, key), ip=str(ip),
                        veth=names.pod_veth(key), tcp_ports=tcp, udp_ports=udp)
        reg.pods[key] = rec
        registry.save(reg)  # recorded before it exists: `lab down` finds it after a crash
        network.ensure_pod(rec_node, rec)
        if tcp or udp:
            rec.server_pid = servers.start(cluster, rec)
            registry.save(reg)
        if reg.datapath:
            datapath.attach_node(cluster, node, rec_node.netns, {rec.veth: rec.address})
        stored = StoredPod(node, str(ip), dict(labels), [list(p) for p in ports])
        revision = inventory.update(cluster, lambda s: s.add_pod(key, stored))
    waited, lagging = wait_synced(state_dir, list(reg.nodes), revision, timeout)
    return PodChange(key, node, str(ip), revision, waited, lagging)


def delete_pod(state_dir: Path, cluster: str, key: str, timeout: float = SYNC_TIMEOUT_S) -> PodChange:
    parse_key(key)
    with registry.locked(cluster):
        reg = copy.deepcopy(registry.require(cluster))
        rec = reg.pods.get(key)
        if rec is None:
            raise LabError(f"lab {cluster!r} has no pod {key!r}")
        store = _store(cluster)
        revision = store.revision
        if any(r.key == key for r in store.rows):
            revision = inventory.update(cluster, lambda s: s.delete_pod(key))
        # the agents drop its endpoint (and its program) while the veth still exists
        waited, lagging = wait_synced(state_dir, list(reg.nodes), revision, timeout)
        servers.stop(cluster, rec.server_pid, key)
        node = reg.nodes.get(rec.node)
        network.remove_pod(node.netns if node else "", rec)
        del reg.pods[key]
        registry.save(reg)
    return PodChange(key, rec.node, rec.ip, revision, waited, lagging)


def _store(cluster: str) -> inventory.RuntimeInventory:
    store = inventory.load(cluster)
    if store is None:
        raise LabError(f"lab {cluster!r} has no inventory store: pods of this lab come from the repo's "
                       "inventory (git); set [inventory] source = \"lab\" in meshctl.toml and run "
                       "`meshctl lab up` to churn them")
    return store


def wait_synced(state_dir: Path, nodes: Sequence[str], revision: int,
                timeout: float) -> tuple[float, tuple[str, ...]]:
    """Wait until every node agent that holds an intent reports `revision` (or later)."""
    started = time.monotonic()
    waiting = [n for n in nodes if (agent_dir(state_dir, n) / INTENT_FILE).exists()]
    while waiting and time.monotonic() - started < timeout:
        waiting = [n for n in waiting if synced_revision(agent_dir(state_dir, n)) < revision]
        if waiting:
            time.sleep(0.01)
    return time.monotonic() - started, tuple(waiting)


def seed(cluster: str, pods: Sequence[Pod], namespaces: Sequence[Namespace]) -> int:
    """Put the repo's namespaces and the pods the store lacks into the store (`lab up`): pods
    added by `lab pod add` stay; a repo pod deleted with `lab pod delete` comes back."""
    reg = registry.require(cluster)

    def change(store: inventory.Store) -> None:
        for ns in namespaces:
            store.namespaces[ns.name] = dict(ns.labels)
        for pod in pods:
            if pod.key in store.pods or pod.key not in reg.pods:
                continue
            ports: list[list[Any]] = [[cp.name, int(cp.container_port), str(cp.protocol)] for cp in pod.ports]
            store.add_pod(pod.key, StoredPod(pod.node_name, reg.pods[pod.key].ip, dict(pod.labels), ports))

    return inventory.update(cluster, change)

