"""Stale plan detection: apply refuses a plan whose starting point has moved (Terraform-style),
and says what moved (per-component digests of the plan, the drift diff against the state)."""

from __future__ import annotations

from collections.abc import Callable, Mapping
from typing import Any

from meshctl.catalog import Catalog
from meshctl.errors import PlanStaleError
from meshctl.nodestate import NodeState
from meshctl.plan.change import Change, ChangeKind, describe_drift
from meshctl.plan.digests import Moved, NodeDigests, moved
from meshctl.plan.model import FINGERPRINTS_SINCE, NodePlan, Plan, format_tuple
from meshctl.plan.names import Namer


def check_fresh(plan: Plan, observed: Mapping[str, str], state: Any) -> None:
    """Raise PlanStaleError unless every node's live fingerprint and the state match the plan.

    `observed` maps node -> current NodeState.fingerprint(); `state` is a meshctl.state.State
    (or None to skip the state check).
    """
    if format_tuple(plan.format_version) < FINGERPRINTS_SINCE:
        raise PlanStaleError(
            f"Saved plan is stale: it was made by an older meshctl (plan format {plan.format_version}) "
            "that computed node fingerprints differently; make the plan again"
        )
    if state is not None:
        lineage = getattr(state, "lineage", None)
        if plan.state_lineage is not None and lineage != plan.state_lineage:
            raise PlanStaleError(
                f"Saved plan is stale: it was made for state lineage {plan.state_lineage}, "
                f"the state now has lineage {lineage}"
            )
        serial = int(getattr(state, "serial", 0))
        if serial != plan.state_serial:
            raise PlanStaleError(
                f"Saved plan is stale: the state changed since the plan was made "
                f"(serial {plan.state_serial}, now {serial})"
            )
    for node in plan.nodes:
        now = observed.get(node.node)
        if now is None:
            raise PlanStaleError(f"Saved plan is stale: {node.node} was not observed now")
        if now != node.observed_fingerprint:
            raise PlanStaleError(
                f"Saved plan is stale: {node.node} changed since the plan was made "
                f"(fingerprint {node.observed_fingerprint}, now {now})"
            )


def changed_components(node_plan: NodePlan, live: NodeState) -> list[Moved] | None:
    """The components of `live` that differ from the state the plan was made from; None when
    the plan records no digests (a format 2.0 file)."""
    if node_plan.digests is None:
        return None
    return moved(node_plan.digests, NodeDigests.of(live))


def _component_of(change: Change) -> tuple[str, int | None]:
    if change.kind in (ChangeKind.POLICY, ChangeKind.POLICY_MAP):
        eid = change.key["endpoint_id"] if isinstance(change.key, dict) else change.key
        return "policies", int(eid)
    return _KIND_COMPONENT.get(change.kind, ""), None


_KIND_COMPONENT = {
    ChangeKind.CONFIG: "config",
    ChangeKind.IPCACHE: "ipcache",
    ChangeKind.ENDPOINT: "endpoints",
    ChangeKind.ATTACHMENT: "attachments",
    ChangeKind.HTTP_RULE: "http",
    ChangeKind.DNS_RULE: "dns",
    ChangeKind.FQDN: "fqdn",
    ChangeKind.WIREGUARD: "encryption",
    ChangeKind.WIREGUARD_PEER: "encryption",
    ChangeKind.LOAD_BALANCER: "load_balancer",
    ChangeKind.LB_BACKEND: "load_balancer",
    ChangeKind.LB_SERVICE: "load_balancer",
}


def explain_stale(
    plan: Plan,
    observed: Mapping[str, NodeState],
    last_intent: Mapping[str, NodeState],
    catalog: Catalog | None = None,
    replayed: Callable[[NodePlan, NodeState], list[str]] | None = None,
) -> list[str]:
    """Lines naming, per stale node, the components that moved since the plan was made and,
    where the state holds the node's last applied intent, the exact entries that differ from it
    (the drift diff, limited to the moved components). Without an intent, `replayed` may say
    what moved (a plan made in this process can rebuild its starting state)."""
    from meshctl.plan.diff import diff_node

    catalog = catalog or Catalog()
    lines: list[str] = []
    for node_plan in plan.nodes:
        live = observed.get(node_plan.node)
        if live is None or live.fingerprint() == node_plan.observed_fingerprint:
            continue
        comps = changed_components(node_plan, live)
        names = Namer(catalog, node_plan.node, live, *([last_intent[node_plan.node]]
                                                       if node_plan.node in last_intent else []))
        if comps is None:
            lines.append(f"  {node_plan.node}: changed (the plan file records no per-component digests)")
        elif comps:
            lines.append(f"  {node_plan.node}: " + ", ".join(m.describe(names.endpoint) for m in comps))
        intent = last_intent.get(node_plan.node)
        if intent is None:
            lines.extend(replayed(node_plan, live) if replayed else [])
            continue
        wanted = {(m.component, m.endpoint_id) for m in comps or ()}
        drift = [
            c for c in diff_node(live, intent, catalog)
            if comps is None or _component_of(c) in wanted or (_component_of(c)[0], None) in wanted
        ]
        if drift:
            lines.append("    differs from the last applied intent:")
            lines.extend(f"      {c.action.symbol} {c.address}: {describe_drift(c)['drift']}" for c in drift)
    return lines


def endpoint_catalog(endpoint_ids: Mapping[str, Any]) -> Catalog:
    """Pod names of endpoint ids from the state's endpoint table (node -> {"endpoints": {pod: id}}),
    for a saved plan applied without compiling the repo."""
    from meshctl.nodestate import FrozenMap

    eps = {}
    for node, table in endpoint_ids.items():
        pods = table.get("endpoints", {}) if isinstance(table, Mapping) else {}
        eps[node] = FrozenMap({int(i): str(pod) for pod, i in pods.items()})
    return Catalog(endpoints=FrozenMap(eps))
