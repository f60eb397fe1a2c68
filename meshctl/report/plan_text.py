"""Terraform-like text for a terminal: `+ ~ - -/+` per change, grouped by node.

Returns a rich Text: print it with a rich Console (colour on a TTY) or take `.plain`.
"""

from __future__ import annotations

from rich.text import Text

from meshctl.plan.action import Action
from meshctl.plan.model import Plan, Summary
from meshctl.report.fields import value_lines

STYLES = {
    Action.CREATE: "green",
    Action.UPDATE: "yellow",
    Action.DELETE: "red",
    Action.REPLACE: "magenta",
    Action.NOOP: "dim",
}


def _header(plan: Plan) -> str:
    commit = (plan.source_commit or "working tree")[:12]
    dirty = " (dirty)" if plan.source_dirty else ""
    return (
        f"meshctl plan {plan.plan_id[:19]}  source {commit}{dirty}  "
        f"state serial {plan.state_serial}  made {plan.created_at}"
    )


def render_text(plan: Plan) -> Text:
    out = Text()
    out.append(_header(plan) + "\n\n", style="bold")

    if plan.impact or plan.cuts:
        out.append("Connectivity impact:\n", style="bold")
        for r in plan.impact:
            style = "green" if r.after == "FORWARDED" else "red"
            out.append(f"  {r.src} -> {r.dst} {r.protocol}/{r.port}: {r.before} -> ")
            out.append(r.after, style=style)
            out.append("\n")
            for rule in r.rules:
                out.append(f"      by {rule}\n", style="dim")
        if plan.cuts:
            n = plan.cut_connections
            out.append(f"  Established connections (live conntrack): the apply cuts {n}\n", style="bold")
            for cut in plan.cuts:
                out.append(f"  {cut.line}\n", style="red")
                for address in cut.changes:
                    out.append(f"      by {address}\n", style="dim")
        out.append("\n")

    if plan.warnings:
        out.append("Warnings:\n", style="bold")
        for w in plan.warnings:
            mark, style = ("!", "yellow") if w.severity == "warning" else ("i", "cyan")
            out.append(f"  {mark} {w.summary}\n", style=style)
            if w.detail:
                out.append(f"      {w.detail}\n")
        out.append("\n")

    if plan.has_changes:
        out.append("meshctl will perform these actions (+ create, ~ update, - destroy, -/+ replace):\n\n")
    for node in plan.nodes:
        if not node.changes:
            continue
        s = Summary.of(node.changes)
        out.append(f"{node.node}: {s.add} to add, {s.change} to change, {s.destroy} to destroy\n",
                   style="bold")
        for c in node.changes:
            out.append(f"  {c.action.symbol:>3} ", style=STYLES[c.action])
            out.append(c.address + "\n", style=STYLES[c.action])
            for line in value_lines(c):
                out.append(f"        {line}\n")
            if c.reason:
                out.append(f"        # {c.reason}\n", style="dim")
            for origin in c.origins:
                out.append(f"        # rule: {origin}\n", style="dim")
            for cut in plan.cuts_of(c):
                out.append(f"        ! {cut.line}\n", style="red")
        out.append("\n")

    out.append(plan.summary.line + "\n", style="bold")
    return out
