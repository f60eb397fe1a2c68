"""Compile two revisions against one inventory and list the connections whose verdict flips.

Reuses meshctl.plan.impact.connectivity_impact (the pods x ports x verdict emulation) to find
the pairs; each side is then explained by its own compile's catalog (explain.side_rules).
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from meshctl.impact.explain import side_rules
from meshctl.impact.http import http_changes
from meshctl.impact.inventory import resolve_inventory, with_inventory
from meshctl.impact.model import FlowReplay, HttpChange, ImpactPair, ImpactReport, Revision
from meshctl.nodestate import NodeState

BUILD = "impact"  # attachments do not change verdicts: any build hash will do
WORKTREE = "worktree"


@dataclass(frozen=True)
class ComparedStates:
    """Both compiles, kept for flow replay."""

    base_nodes: dict[str, NodeState]
    head_nodes: dict[str, NodeState]
    base: Any  # Compiled
    head: Any  # Compiled
    pairs: tuple[ImpactPair, ...]
    pods: Any  # PodTargets
    http: tuple[HttpChange, ...] = ()


def compare_states(base: Any, head: Any) -> ComparedStates:
    """Two DesiredStates sharing one inventory (with addresses) -> the pairs whose verdict flips."""
    from meshctl.compile import EndpointTable, IdentityTable, compile_cluster
    from meshctl.plan.impact import WORLD_ADDRESS, connectivity_impact, pods_from_desired

    head_c = compile_cluster(head, IdentityTable(), EndpointTable(), BUILD)
    # The same tables: a pod keeps its identity and endpoint id in both compiles; the base is
    # compiled incrementally from the head (only the endpoints the change selects are rebuilt).
    base_c = compile_cluster(base, head_c.identities, head_c.endpoint_ids, BUILD, memo=head_c.memo)
    nodes = [n.name for n in head.config.nodes]
    base_nodes = {n: base_c.nodes.get(n) or NodeState(n) for n in nodes}
    head_nodes = {n: head_c.nodes.get(n) or NodeState(n) for n in nodes}
    pods = pods_from_desired(head)
    ips = {p.name: p.ip for p in pods}
    pairs = []
    for r in connectivity_impact(base_nodes, head_nodes, head_c.catalog, pods):
        ends = (r.src, ips.get(r.src, WORLD_ADDRESS), r.dst, ips[r.dst], r.protocol, r.port)
        pairs.append(ImpactPair(
            r.src, r.dst, r.protocol, r.port, r.before, r.after,
            base_rules=side_rules(base_nodes, base_c.catalog, *ends),
            head_rules=side_rules(head_nodes, head_c.catalog, *ends),
        ))
    return ComparedStates(base_nodes, head_nodes, base_c, head_c, tuple(pairs), pods,
                          http_changes(base_nodes, head_nodes, pods))


def _policy_ids(desired: Any) -> dict[str, Any]:
    out = {}
    for p in desired.policies:
        kind = getattr(p, "kind", type(p).__name__)
        ns = getattr(p.metadata, "namespace", None)
        cluster_wide = kind == "CiliumClusterwideNetworkPolicy"
        name = f"{ns}/{p.metadata.name}" if ns and not cluster_wide else p.metadata.name
        out[f"{kind} {name}"] = p.model_dump(exclude={"source"})
    return out


def policy_changes(base: Any, head: Any) -> tuple[str, ...]:
    """"+ kind ns/name" added, "- ..." removed, "~ ..." changed: the diff a reviewer sees."""
    b, h = _policy_ids(base), _policy_ids(head)
    out = [f"+ {k}" for k in sorted(h.keys() - b.keys())]
    out += [f"- {k}" for k in sorted(b.keys() - h.keys())]
    out += [f"~ {k}" for k in sorted(b.keys() & h.keys()) if b[k] != h[k]]
    return tuple(out)


def compare_revisions(
    root: Path,
    base_ref: str,
    head_ref: str | None = None,
    flows: Sequence[Any] | None = None,
    window: str = "24h",
    use_lab: bool = True,
    replay_note: str = "",
) -> tuple[ImpactReport, ComparedStates]:
    """`meshctl impact`: load both revisions, judge them on the head inventory, replay `flows`."""
    from meshctl.impact.replay import replay_flows
    from meshctl.source import load_desired

    base_d = load_desired(root, base_ref)
    head_d = load_desired(root, head_ref)
    inventory, where = resolve_inventory(head_d, use_lab=use_lab)
    compared = compare_states(with_inventory(base_d, inventory), inventory)
    warnings: list[str] = []
    if base_d.config.cluster != head_d.config.cluster:
        warnings.append(f"the cluster name changes: {base_d.config.cluster} -> {head_d.config.cluster}")
    warnings += [str(w) for w in compared.head.warnings]
    replay = None
    if flows is not None:
        replay = replay_flows(flows, compared, inventory, window)
    elif replay_note:
        replay = FlowReplay(window, 0, 0, (), replay_note)
    report = ImpactReport(
        cluster=head_d.config.cluster,
        base=Revision(base_ref, base_d.commit, base_d.dirty),
        head=Revision(head_ref or WORKTREE, head_d.commit, head_d.dirty),
        inventory=where,
        pods=len(inventory.pods),
        pairs=compared.pairs,
        replay=replay,
        warnings=tuple(dict.fromkeys(warnings)),
        policies_changed=policy_changes(base_d, head_d),
        http=compared.http,
    )
    return report, compared
