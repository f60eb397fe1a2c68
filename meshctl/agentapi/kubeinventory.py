"""The node agent's runtime inventory on a cluster: the API server's pods, Cilium's identities.

Pods and namespaces come from the watch (meshctl.source.kubewatch). Identities are allocated as
Cilium's CRD mode does: one CiliumIdentity object per identity-relevant label set, named by its
number, with the labels under `security-labels`; an agent that meets a new label set creates
the next free number, and a 409 (another agent took that name first) makes it list again and
retry, so every node ends with the same number per label set. Endpoint ids are the node's own
(as in Cilium) and kept in the agent's directory.
"""

from __future__ import annotations

import json
import logging
import threading
from collections.abc import Iterable
from pathlib import Path
from typing import TYPE_CHECKING, Any

from meshctl.agentapi.endpoints import EndpointSync
from meshctl.compile.identities import CLUSTER_IDENTITY_MAX, EndpointTable, IdentityTable
from meshctl.compile.labels import identity_label_sets
from meshctl.compile.spec import namespace_labels
from meshctl.nodestate import CLUSTER_IDENTITY_MIN
from meshctl.source.kubewatch import InventoryWatch
from meshctl.source.runtime import PodRow, RuntimeInventory
from meshctl.state.atomic import atomic_write

if TYPE_CHECKING:
    from meshctl.agentapi.service import NodeService
    from meshctl.model.config import InventorySection

log = logging.getLogger(__name__)
GROUP, VERSION, PLURAL = "cilium.io", "v2", "ciliumidentities"
ENDPOINTS_FILE = "endpoint_ids.json"
MAX_CONFLICTS = 64


def _labels_of(obj: dict[str, Any]) -> tuple[str, ...]:
    return tuple(sorted(f"{k}={v}" for k, v in (obj.get("security-labels") or {}).items()))


class CrdIdentities:
    """Label set -> number, through CiliumIdentity objects on the API server."""

    def __init__(self, api: Any) -> None:
        from kubernetes import client

        self.custom = client.CustomObjectsApi(api)
        self.table = IdentityTable()

    def refresh(self) -> IdentityTable:
        body = self.custom.list_cluster_custom_object(GROUP, VERSION, PLURAL)
        found = {}
        for item in body.get("items") or ():
            name = str((item.get("metadata") or {}).get("name"))
            if name.isdigit():
                found[_labels_of(item)] = int(name)
        top = max(found.values(), default=CLUSTER_IDENTITY_MIN - 1)
        self.table = IdentityTable(found, top + 1)
        return self.table

    def allocate(self, label_sets: Iterable[tuple[str, ...]]) -> IdentityTable:
        """Every label set its number: known ones as they are, new ones created (in sorted order)."""
        from kubernetes.client.exceptions import ApiException

        wanted = sorted(set(label_sets))
        if all(ls in self.table.by_labels for ls in wanted):
            return self.table
        self.refresh()
        conflicts = 0
        for labels in wanted:
            while labels not in self.table.by_labels:
                number = self.table.next_id
                if number > CLUSTER_IDENTITY_MAX:
                    raise RuntimeError("cluster identity space exhausted")
                body = {"apiVersion": f"{GROUP}/{VERSION}", "kind": "CiliumIdentity",
                        "metadata": {"name": str(number)},
                        "security-labels": dict(label.split("=", 1) for label in labels)}
                try:
                    self.custom.create_cluster_custom_object(GROUP, VERSION, PLURAL, body)
                except ApiException as err:
                    if err.status != 409 or conflicts >= MAX_CONFLICTS:
                        raise
                    conflicts += 1  # another agent took that number: see what it is for, try again
                    self.refresh()
                    continue
                self.table = IdentityTable({**self.table.by_labels, labels: number}, number + 1)
        return self.table


class KubeRuntime:
    """Callable for EndpointSync: the cluster's inventory now, with numbers for every pod."""

    def __init__(self, watch: InventoryWatch, identities: CrdIdentities, cluster: str, node: str,
                 directory: Path) -> None:
        self.watch, self.identities, self.cluster, self.node = watch, identities, cluster, node
        self.path = directory / ENDPOINTS_FILE
        try:
            self.endpoints = EndpointTable.from_dict(json.loads(self.path.read_bytes()))
        except FileNotFoundError:
            self.endpoints = EndpointTable()
        self._made: tuple[int, RuntimeInventory] | None = None

    def __call__(self) -> RuntimeInventory | None:
        snap = self.watch.snapshot()
        if self.watch.relists == 0:
            return None  # not listed yet: nothing is known, so nothing may be removed
        if self._made is not None and self._made[0] == snap.revision:
            return self._made[1]
        ns_labels = {ns.name: dict(ns.labels) for ns in snap.namespaces}
        sets = identity_label_sets(((p.namespace, p.labels) for p in snap.pods),
                                   lambda ns: namespace_labels(ns_labels, ns), self.cluster)
        table = self.identities.allocate(sets)
        local = [p.key for p in snap.pods if p.node_name == self.node and p.pod_ip is not None]
        endpoints = self.endpoints.allocate(self.node, local)
        if endpoints is not self.endpoints:
            atomic_write(self.path, json.dumps(endpoints.as_dict()).encode())
            self.endpoints = endpoints
        made = RuntimeInventory(f"the Kubernetes API of {self.cluster}", snap.revision, snap.namespaces,
                                tuple(PodRow.of(p) for p in snap.pods), table.as_dict(), endpoints.as_dict())
        made.__dict__["pods"] = snap.pods  # cached_property: the watch made them already
        self._made = (snap.revision, made)
        return made


def kube_endpoint_sync(service: NodeService, cluster: str, section: InventorySection, root: Path,
                       stop: threading.Event) -> EndpointSync:
    """Start following the cluster for the node of `service`: the watch threads and the sync."""
    from meshctl.source.kubernetes import section_client

    api = section_client(section, root)
    watch = InventoryWatch(api, cluster)
    watch.start(stop)
    runtime = KubeRuntime(watch, CrdIdentities(api), cluster, service.node, service.journal_dir)
    service.endpoint_ids = lambda: runtime.endpoints.as_dict()  # the CLI plans with them (GET /v1/endpoints)
    sync = service.endpoint_sync(runtime)
    sync.start(stop)
    return sync
