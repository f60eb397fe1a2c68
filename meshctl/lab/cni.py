"""What the CNI does when a pod starts: its endpoint and identity, under the policy in force.

In a Cilium cluster a pod gets its endpoint (identity, ipcache entry, policy) from the CNI the
moment it starts; with no policy selecting it, everything is allowed (default enforcement
mode). `lab up` does the same for the nodes whose datapath it has just loaded: there no policy
has been applied yet, so every pod is programmed with the repo's identities and endpoint ids
(saved in the state, so the first plan keeps them) and no policy at all. The first plan then
shows the policy rollout and nothing else of the endpoints.

Nodes whose datapath was attached before this `lab up` are left as they are: if their maps
lost their entries, their pods stay dropped (NO_ENDPOINT) until an apply or `meshctl recover`
restores the applied intent. Opening them here would fail open over a policy in force.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Iterable
from pathlib import Path

from meshctl.lab import registry
from meshctl.nodestate import NodeState


def without_policies(current: NodeState, compiled: NodeState) -> NodeState:
    """`current` with the compiled endpoints and peers, and an empty policy per endpoint: all
    else (config, attachments, load balancer, encryption, foreign entries) stays as observed."""
    from meshctl.nodestate import FrozenMap

    empty: FrozenMap = FrozenMap()
    policies = FrozenMap({e.endpoint_id: empty for e in compiled.endpoints.values()})
    return dataclasses.replace(current, ipcache=compiled.ipcache, endpoints=compiled.endpoints,
                               policies=policies)


def program_nodes(root: Path, cluster: str, nodes: Iterable[str]) -> dict[str, int]:
    """Program every pod of `nodes` with its endpoint and identity and no policy; returns
    node -> number of endpoints programmed. Identities and endpoint ids come from (and new ones
    go to) the state of `root`, so apply later uses the same numbers."""
    from meshctl.dataplane.node import NodeDatapath
    from meshctl.dataplane.reconcile import reconcile
    from meshctl.observe import observe_node
    from meshctl.source import load_desired
    from meshctl.state import StateLock, load_state
    from meshctl.workflow import Workspace, compile_desired, persist_tables

    todo = sorted(set(nodes))
    if not todo:
        return {}
    reg = registry.require(cluster)
    desired = load_desired(root)
    if desired.config.apply.driver == "agent":  # the node agents own their endpoints' lifecycle
        return {}
    desired = desired.with_pod_ips({k: p.address for k, p in reg.pods.items()})
    desired = dataclasses.replace(desired, policies=())  # the policy in force on a new node
    netns = {name: rec.netns for name, rec in reg.nodes.items()}
    ws = Workspace(root, desired, netns)
    with StateLock(ws.state_dir, "lab up"):
        state = load_state(ws.state_dir)
        compiled = compile_desired(ws, state)
        persist_tables(ws.state_dir, state, compiled)
    out = {}
    for node in todo:
        target = compiled.nodes.get(node) or NodeState(node)
        current = observe_node(cluster, node, netns[node])
        reconcile(NodeDatapath(cluster, node, netns[node]), current, without_policies(current, target))
        out[node] = len(target.endpoints)
    return out
