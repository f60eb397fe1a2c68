"""Terraform-like text for a terminal: `+ ~ - -/+` per change, grouped by node.

Returns a rich Text: print it with a rich Console (colour on a TTY) or take `.plain`.
"""

from __future__ import annotations

import textwrap

from rich.control import strip_control_codes
from rich.text import Span, Text

from meshctl.plan.action import Action
from meshctl.plan.model import Plan, Summary
from meshctl.report import staged
from meshctl.report.fields import value_lines

STYLES = {
    Action.CREATE: "green",
    Action.UPDATE: "yellow",
    Action.DELETE: "red",
    Action.REPLACE: "magenta",
    Action.NOOP: "dim",
}


MAX_LINE = 300  # no line of the text plan is longer: long reasons and details wrap


class _Styled:
    """Pieces of text and their styles, made into one Text at the end: Text.append cleans every
    piece on its own, which costs seconds for a plan of 10,000 lines."""

    def __init__(self) -> None:
        self.parts: list[str] = []
        self.spans: list[Span] = []
        self.length = 0

    def append(self, text: str, style: str = "") -> None:
        text = strip_control_codes(text)  # as Text.append does: spans must stay where they point
        if style:
            self.spans.append(Span(self.length, self.length + len(text), style))
        self.parts.append(text)
        self.length += len(text)

    def text(self) -> Text:
        return Text("".join(self.parts), spans=self.spans)


def _put(out: _Styled, indent: str, text: str, style: str = "") -> None:
    """`text` at `indent`, wrapped below MAX_LINE with continuation lines indented two more."""
    if len(indent) + len(text) <= MAX_LINE:
        out.append(f"{indent}{text}\n", style=style)
        return
    for line in textwrap.wrap(text, MAX_LINE, initial_indent=indent, subsequent_indent=indent + "  ",
                              break_on_hyphens=False):
        out.append(line + "\n", style=style)


def _header(plan: Plan) -> str:
    commit = (plan.source_commit or "working tree")[:12]
    dirty = " (dirty)" if plan.source_dirty else ""
    return (
        f"meshctl plan {plan.plan_id[:19]}  source {commit}{dirty}  "
        f"state serial {plan.state_serial}  made {plan.created_at}"
    )


def _staged(out: _Styled, plan: Plan) -> None:
    """Staged policies (audit mode) of the target and those this plan enforces, with evidence."""
    if plan.enforcing:
        out.append("Enforcing staged policies (AUDIT flows since each was staged):\n", style="bold")
        for row in plan.enforcing:
            _put(out, "  ", staged.enforcement_line(plan, row))
            for line, drop in staged.evidence_lines(plan, row):
                _put(out, "      ", line, "red" if drop else "")
        out.append("\n")
    if plan.staged and plan.has_changes:
        out.append("Staged policies (audit mode: loaded and judged, never enforced):\n", style="bold")
        for s in plan.staged:
            _put(out, "  ", staged.staged_line(plan, s))
        for r in plan.staged_impact:
            _put(out, "      ", staged.would_line(r), "yellow")
            for rule in r.rules:
                _put(out, "          ", f"by {rule}", "dim")
        out.append("\n")


def render_text(plan: Plan) -> Text:
    out = _Styled()
    out.append(_header(plan) + "\n\n", style="bold")

    if plan.impact or plan.cuts:
        out.append("Connectivity impact:\n", style="bold")
        for r in plan.impact:
            style = "green" if r.after == "FORWARDED" else "red"
            out.append(f"  {r.src} -> {r.dst} {r.protocol}/{r.port}: {r.before} -> ")
            out.append(r.after, style=style)
            out.append("\n")
            for rule in r.rules:
                _put(out, "      ", f"by {rule}", "dim")
        if plan.cuts:
            n = plan.cut_connections
            out.append(f"  Established connections (live conntrack): the apply cuts {n}\n", style="bold")
            for cut in plan.cuts:
                _put(out, "  ", cut.line, "red")
                for address in cut.changes:
                    _put(out, "      ", f"by {address}", "dim")
        out.append("\n")

    _staged(out, plan)

    if plan.warnings:
        out.append("Warnings:\n", style="bold")
        for w in plan.warnings:
            mark, style = ("!", "yellow") if w.severity == "warning" else ("i", "cyan")
            _put(out, "  ", f"{mark} {w.summary}", style)
            if w.detail:
                _put(out, "      ", w.detail)
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
                _put(out, "        ", line)
            if c.reason:
                _put(out, "        # ", c.reason, "dim")
            for origin in c.origins:
                _put(out, "        # ", f"rule: {origin}", "dim")
            for cut in plan.cuts_of(c):
                _put(out, "        ! ", cut.line, "red")
        out.append("\n")

    out.append(plan.summary.line + "\n", style="bold")
    return out.text()
