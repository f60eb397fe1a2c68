"""Stale plan detection: apply refuses a plan whose starting point has moved (Terraform-style)."""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

from meshctl.errors import PlanStaleError
from meshctl.plan.model import Plan


def check_fresh(plan: Plan, observed: Mapping[str, str], state: Any) -> None:
    """Raise PlanStaleError unless every node's live fingerprint and the state match the plan.

    `observed` maps node -> current NodeState.fingerprint(); `state` is a meshctl.state.State
    (or None to skip the state check).
    """
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
