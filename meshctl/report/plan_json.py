"""JSON output: exactly the plan file document (versioned by format_version)."""

from __future__ import annotations

from meshctl.plan.model import Plan
from meshctl.plan.planfile import plan_to_text


def render_json(plan: Plan) -> str:
    return plan_to_text(plan)
