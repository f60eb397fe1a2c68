"""meshctl.plan: plans as data (actions, changes, per-node plans), the plan file and staleness."""

from meshctl.plan.action import Action
from meshctl.plan.build import build_plan
from meshctl.plan.change import Change, ChangeKind
from meshctl.plan.diff import diff_node
from meshctl.plan.impact import PodTarget
from meshctl.plan.model import CutRow, ImpactRow, NodePlan, Plan, PlanWarning, Summary
from meshctl.plan.patch import apply_changes
from meshctl.plan.planfile import default_plan_path, read_plan, write_plan
from meshctl.plan.stale import check_fresh

__all__ = [
    "Action",
    "Change",
    "ChangeKind",
    "CutRow",
    "ImpactRow",
    "NodePlan",
    "Plan",
    "PlanWarning",
    "PodTarget",
    "Summary",
    "apply_changes",
    "build_plan",
    "check_fresh",
    "default_plan_path",
    "diff_node",
    "read_plan",
    "write_plan",
]
