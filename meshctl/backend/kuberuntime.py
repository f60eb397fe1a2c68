"""The CLI's runtime inventory on a cluster: the numbers the node agents gave the API server's pods.

With `[inventory] source = "kubernetes"` the node agents allocate as Cilium's do: identities as
CiliumIdentity objects (meshctl.agentapi.kubeinventory), endpoint ids node-locally. A plan must
compile the same numbers, or it would undo them: so the CLI reads the identities from the
CiliumIdentity objects and each node's endpoint ids from its agent (GET /v1/endpoints), and never
allocates. A pod whose label set has no identity yet, or that its node's agent has not given an
endpoint yet, is left out of the plan: its agent is about to add it under the intent it holds
(churn, not a change to review). Read only: the CLI needs `list` on ciliumidentities.cilium.io.
"""

from __future__ import annotations

import logging
from collections.abc import Mapping
from typing import TYPE_CHECKING, Any

from meshctl.compile.identities import IdentityTable
from meshctl.compile.labels import identity_label_sets
from meshctl.compile.spec import namespace_labels
from meshctl.source.runtime import PodRow, RuntimeInventory

if TYPE_CHECKING:
    from meshctl.backend.agents import AgentBackend
    from meshctl.source import DesiredState
    from meshctl.source.kubernetes import KubeInventory

log = logging.getLogger(__name__)


def runtime_of(inventory: KubeInventory, identities: IdentityTable,
               endpoint_tables: Mapping[str, Mapping[str, Any] | None],
               cluster: str) -> tuple[RuntimeInventory, list[str]]:
    """(the runtime inventory, "ns/pod: why" of each pod left out). `endpoint_tables`: node ->
    its agent's EndpointTable.as_dict() (None: the agent keeps none)."""
    by_ns = {ns.name: dict(ns.labels) for ns in inventory.namespaces}
    sets = identity_label_sets(((p.namespace, p.labels) for p in inventory.pods),
                               lambda ns: namespace_labels(by_ns, ns), cluster)
    endpoint_ids = {node: table[node] for node, table in endpoint_tables.items()
                    if table is not None and node in table}
    kept, waiting = [], []
    for pod, label_set in zip(inventory.pods, sets, strict=True):
        endpoints = endpoint_ids.get(pod.node_name, {}).get("endpoints", ())
        if label_set not in identities.by_labels:
            waiting.append(f"{pod.key}: no CiliumIdentity for its labels yet")
        elif pod.pod_ip is not None and pod.key not in endpoints:
            waiting.append(f"{pod.key}: not an endpoint of {pod.node_name}'s agent yet")
        else:
            kept.append(pod)
    made = RuntimeInventory(f"the Kubernetes API of {cluster}", inventory.revision, inventory.namespaces,
                            tuple(PodRow.of(p) for p in kept), identities.as_dict(), endpoint_ids,
                            log_start=inventory.revision)  # no change log: churn is not listed
    made.__dict__["pods"] = tuple(kept)  # cached_property: the API's pods, already validated
    return made, waiting


def kube_runtime(desired: DesiredState, listed: KubeInventory, backend: AgentBackend) -> RuntimeInventory:
    """The pods `listed` with the cluster's identities and every node's endpoint ids; logs who waits."""
    from meshctl.agentapi.kubeinventory import CrdIdentities
    from meshctl.source.kubernetes import KubernetesError, section_client

    config = desired.config
    api = section_client(config.inventory, desired.root)
    try:
        identities = CrdIdentities(api).refresh()
    except Exception as err:  # ApiException, or the transport's: one clear message
        why = getattr(err, "reason", None) or err
        raise KubernetesError(
            f"kubernetes: cannot list ciliumidentities.cilium.io ({why}): the node agents allocate "
            "identities there; install Cilium's CRDs and grant `list`") from None
    finally:
        api.close()
    runtime, waiting = runtime_of(listed, identities, backend.endpoint_tables(backend.node_order),
                                  config.cluster)
    for why in waiting:
        log.info("kubernetes inventory: left out %s", why)
    return runtime
