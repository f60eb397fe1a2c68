"""The state as the nodes hold it: each node keeps its share, and the cluster's state is their union.

An apply hands every node it leaves at its target that node's share of the new state: the
cluster-wide part (lineage, serial, identity and endpoint tables, the rules behind the cookies,
staged policies, the inventory revision) and the node's own record (fingerprint and intended
NodeState). No secret is in it (the state holds none). So a CI runner that never saw the last
apply reads lineage, serial and tables from the nodes, and the local state dir is a cache.

The union follows the nodes: their lineage (two lineages on one cluster is an error, as a
Terraform state of another lineage is), the newest serial's cluster-wide part, each node's own
record. The local state stands in only where it is at least as new as the newest share, and for
nodes that hold no share while the local state is the base (an apply from before the nodes held
shares). Nodes at different serials (a plan limited with --node, an apply stopped before every
node got its share) are named, never hidden.
"""

from __future__ import annotations

import json
from collections.abc import Mapping
from dataclasses import dataclass, field, replace
from typing import Any

from meshctl.errors import StateError
from meshctl.state.store import State


def node_share(state: State, node: str) -> dict[str, Any]:
    """`node`'s share of `state` as JSON: the cluster-wide part and the node's own record."""
    return json.loads(replace(state, nodes={node: state.nodes[node]}).to_text())


def share_of(raw: Any, node: str) -> State:
    """A share read back; ValueError when it is not one of `node`."""
    if not isinstance(raw, Mapping):
        raise ValueError("a share is a JSON object")
    try:
        share = State.from_json(dict(raw))
    except (KeyError, TypeError) as err:
        raise ValueError(f"not a state share ({type(err).__name__}: {err})") from None
    if set(share.nodes) != {node} or share.lineage is None:
        raise ValueError(f"not a share of node {node} (nodes {sorted(share.nodes)}, lineage {share.lineage})")
    return share


@dataclass(frozen=True)
class ClusterState:
    """The state to plan, apply and drift from, and the serial each node holds."""

    state: State
    serials: dict[str, int] = field(default_factory=dict)  # node -> serial of its share

    def mixed(self) -> str | None:
        """`nodes hold different serials: node-1, node-2 at 8; node-3 at 7`, or None."""
        by_serial: dict[int, list[str]] = {}
        for node, serial in self.serials.items():
            by_serial.setdefault(serial, []).append(node)
        if len(by_serial) < 2:
            return None
        parts = [f"{', '.join(sorted(nodes))} at {s}" for s, nodes in sorted(by_serial.items(), reverse=True)]
        return "the nodes hold different state serials: " + "; ".join(parts)


def merge_shares(local: State, shares: Mapping[str, State | None]) -> ClusterState:
    """The cluster's state from the nodes' shares (None: the node holds none) and the local cache."""
    held = {n: s for n, s in shares.items() if s is not None}
    if not held:
        return ClusterState(local)
    lineages: dict[str, list[str]] = {}
    for node, share in held.items():
        lineages.setdefault(str(share.lineage), []).append(node)
    if len(lineages) > 1:
        parts = "; ".join(f"{', '.join(sorted(nodes))}: {lineage}"
                          for lineage, nodes in sorted(lineages.items()))
        raise StateError(f"the nodes hold shares of different state lineages ({parts}): they were applied "
                         "from two different states; uninstall the nodes of the one to drop "
                         "(`meshctl uninstall --node N`) and apply again")
    newest = max(held.values(), key=lambda s: s.serial)
    base = local if local.lineage == newest.lineage and local.serial >= newest.serial else newest
    nodes = dict(base.nodes)
    for node, share in shares.items():
        if share is not None:
            nodes[node] = share.nodes[node]
        elif base is not local:
            nodes.pop(node, None)
    return ClusterState(replace(base, nodes=nodes), {n: s.serial for n, s in held.items()})
