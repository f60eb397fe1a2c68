"""What the CNI does when a pod starts: its endpoint and identity, under the policy in force.

In a Cilium cluster a pod gets its endpoint (identity, ipcache entry, policy) from the CNI the
moment it starts; with no policy selecting it, everything is allowed (default enforcement
mode). `lab up` does the same for the nodes whose datapath it has just loaded: there no policy
has been applied yet, so every pod is programmed with the repo's identities and endpoint ids
(saved in the state, so the first plan keeps them) and no policy at all. The first plan then
shows the policy rollout and nothing else of the endpoints.

A node whose datapath was attached before this `lab up` keeps what it has, except that pods
new to it join open when no policy is in force there yet (no apply reached it) and its state is
intact. If its pods lost their entries, or an apply reached it, they stay as they are: dropped
(NO_ENDPOINT) until an apply restores the applied intent. Opening them here could fail open over
a policy in force.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Iterable
from pathlib import Path
from typing import TYPE_CHECKING

from meshctl.lab import registry
from meshctl.nodestate import NodeState

if TYPE_CHECKING:
    from meshctl.source import DesiredState


def without_policies(current: NodeState, compiled: NodeState) -> NodeState:
    """`current` with the compiled endpoints and peers, and an empty policy per endpoint: config,
    attachments, load balancer and encryption stay as observed. Hand-made entries go, as in any
    reconcile (no target holds them)."""
    from meshctl.nodestate import FrozenMap

    empty: FrozenMap = FrozenMap()
    policies = FrozenMap({e.endpoint_id: empty for e in compiled.endpoints.values()})
    return dataclasses.replace(current, ipcache=compiled.ipcache, endpoints=compiled.endpoints,
                               policies=policies, foreign=frozenset())


def program_nodes(root: Path, cluster: str, fresh: Iterable[str],
                  created: Iterable[str] = ()) -> dict[str, int]:
    """Give pods their endpoints and identities under no policy; returns node -> endpoints added.

    `fresh` nodes (datapath loaded by this `lab up`) get every pod. When pods were `created`, a
    node attached before joins them in as well (its new pods, every new peer in its ipcache) if
    no policy is in force there (no apply reached it) and its state is intact (every pod it had
    still has its endpoint). Identities and endpoint ids come from (and new ones go to) the
    state of `root`, so apply later uses the same numbers."""
    from meshctl.dataplane.node import NodeDatapath, current_build
    from meshctl.dataplane.reconcile import reconcile
    from meshctl.observe import observe_node
    from meshctl.source import load_desired
    from meshctl.state import StateLock, load_state
    from meshctl.state.tables import compile_desired, persist_tables

    fresh, created = set(fresh), set(created)
    if not fresh and not created:
        return {}
    reg = registry.require(cluster)
    desired = load_desired(root)
    if desired.config.apply.driver == "agent":  # the node agents own their endpoints' lifecycle
        return {}
    desired = desired.with_pod_ips({k: p.address for k, p in reg.pods.items()})
    desired = dataclasses.replace(desired, policies=())  # the policy in force on a new node
    netns = {name: rec.netns for name, rec in reg.nodes.items()}
    state_dir = desired.config.state_dir
    with StateLock(state_dir, "lab up"):
        state = load_state(state_dir)
        compiled = compile_desired(desired, state, current_build())
        persist_tables(state_dir, state, compiled)
    out = {}
    for node in sorted(reg.nodes):
        if node not in fresh and (not created or node in state.nodes):
            continue  # nothing new, or an apply reached it: the applied policy is in force
        current = observe_node(cluster, node, netns[node])
        had = {p.address for k, p in reg.pods.items() if p.node == node and k not in created}
        if node not in fresh and not had <= set(current.endpoints):
            continue  # attached, and pods lost their endpoints: fail closed until an apply
        target = compiled.nodes.get(node) or NodeState(node)
        reconcile(NodeDatapath(cluster, node, netns[node]), current, without_policies(current, target))
        out[node] = len(set(target.endpoints) - set(current.endpoints))
    return out


def open_intents(desired: DesiredState, fresh: Iterable[str]) -> None:
    """With `[inventory] source = "lab"` the node agents give pods their endpoints: hand each
    `fresh` node (datapath loaded by this `lab up`, so no policy is in force) the intent of no
    policy, under which its agent opens its pods."""
    from meshctl.agentapi.endpoints import agent_dir, write_intent
    from meshctl.compile.intent import NodeIntent
    from meshctl.compile.spec import spec_from_desired
    from meshctl.dataplane.node import current_build

    spec = spec_from_desired(dataclasses.replace(desired, policies=(), pods=()))
    intent = NodeIntent.of(spec, current_build(), NodeState(""))
    for node in fresh:
        write_intent(agent_dir(desired.config.state_dir, node), intent)
