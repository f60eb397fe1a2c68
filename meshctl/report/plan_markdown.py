"""Markdown for a pull-request comment: summary, impact table, warnings, one <details> per node.

GitHub refuses comments over 65,536 characters, so the output is cut below MARKDOWN_LIMIT at a
block boundary (never inside a table row or an open <details>) with a note saying so.
"""

from __future__ import annotations

from meshctl.plan.model import Plan, Summary
from meshctl.report import mermaid, staged
from meshctl.report.fields import value_lines

MARKDOWN_LIMIT = 65_000
_CUT_NOTE = (
    "\n> [!NOTE]\n> Output cut at {limit} characters to fit a comment: {what}. "
    "Run `meshctl show PLAN` for the full plan.\n"
)
_NOTE_RESERVE = 400


def _cell(text: str) -> str:
    return text.replace("|", "\\|").replace("\n", " ")


def _head(plan: Plan) -> list[str]:
    commit = f"`{plan.source_commit[:12]}`" if plan.source_commit else "working tree"
    dirty = " (dirty)" if plan.source_dirty else ""
    return [
        f"### meshctl plan: {plan.summary.line}\n",
        f"<sub>source {commit}{dirty} · state serial {plan.state_serial} · "
        f"plan `{plan.plan_id[:19]}` · {plan.created_at}</sub>\n",
    ]


def _node_block(node_lines: list[str], title: str, budget: int) -> tuple[str, int]:
    """A complete <details> block, holding as many change lines as fit in `budget`."""
    opening = f"\n<details><summary>{title}</summary>\n\n```diff\n"
    closing = "```\n\n</details>\n"
    body: list[str] = []
    size = len(opening) + len(closing) + 64  # room for the "more lines" line
    shown = 0
    for line in node_lines:
        if size + len(line) > budget:
            break
        body.append(line)
        size += len(line)
        shown += 1
    if shown < len(node_lines):
        more = f"# ... {len(node_lines) - shown} more lines not shown\n"
        body.append(more)
    return opening + "".join(body) + closing, shown


def _diff_lines(plan: Plan, index: int) -> list[str]:
    node = plan.nodes[index]
    lines: list[str] = []
    for c in node.changes:
        symbol = c.action.symbol
        lines.append(f"{symbol} {c.address}\n")
        lines.extend(f"{' ' * len(symbol)}     {v}\n" for v in value_lines(c))
        pad = " " * len(symbol)
        if c.reason:
            lines.append(f"{pad}     # {c.reason}\n")
        lines.extend(f"{pad}     # rule: {o}\n" for o in c.origins)
        lines.extend(f"!{pad[1:]}     {cut.line}\n" for cut in plan.cuts_of(c))
    return lines


def _staged_blocks(plan: Plan) -> list[str]:
    """The staged-policies section as blocks (cut whole, like table rows)."""
    out: list[str] = []
    if plan.enforcing:
        out.append("\n#### Enforcing staged policies\n\n")
        for row in plan.enforcing:
            out.append(f"- **{_cell(staged.enforcement_line(plan, row))}**\n")
            for line, drop in staged.evidence_lines(plan, row):
                out.append(f"  - {'⛔ ' if drop else ''}{_cell(line)}\n")
    if plan.staged and plan.has_changes:
        out.append("\n#### Staged policies (audit mode: loaded and judged, never enforced)\n\n")
        out.extend(f"- {_cell(staged.staged_line(plan, s))}\n" for s in plan.staged)
        for r in plan.staged_impact:
            rules = f" ({_cell('; '.join(r.rules))})" if r.rules else ""
            out.append(f"  - 🔍 {_cell(staged.would_line(r))}{rules}\n")
        out.append(mermaid.markdown_block(
            mermaid.verdict_edge(r.src, r.dst, r.protocol, r.port, r.after, mermaid.WOULD_DROP)
            for r in plan.staged_impact))
    return out


def render_markdown(plan: Plan, limit: int = MARKDOWN_LIMIT) -> str:
    budget = limit - _NOTE_RESERVE
    parts: list[str] = []
    size = 0
    cut: str | None = None

    def add(block: str) -> bool:
        nonlocal size
        if size + len(block) > budget:
            return False
        parts.append(block)
        size += len(block)
        return True

    for block in _head(plan):
        add(block)

    if plan.impact and cut is None:
        add("\n#### Connectivity impact\n\n| From | To | Port | Before | After | Rules |\n"
            "|---|---|---|---|---|---|\n")
        for i, r in enumerate(plan.impact):
            arrow = "✅" if r.after == "FORWARDED" else "⛔"
            row = (f"| {_cell(r.src)} | {_cell(r.dst)} | {r.protocol}/{r.port} | {r.before} | "
                   f"{arrow} {r.after} | {_cell('; '.join(r.rules))} |\n")
            if not add(row):
                cut = f"{len(plan.impact) - i} impact rows and everything after them not shown"
                break
        if cut is None:  # the picture of the table, when it fits (it is never what gets cut)
            add(mermaid.markdown_block(
                mermaid.verdict_edge(r.src, r.dst, r.protocol, r.port, r.after) for r in plan.impact))

    if plan.cuts and cut is None:
        add(f"\n**Established connections (live conntrack): the apply cuts {plan.cut_connections}**\n\n")
        for i, row in enumerate(plan.cuts):
            by = f" (by {_cell(', '.join(f'`{a}`' for a in row.changes))})" if row.changes else ""
            if not add(f"- ⛔ {_cell(row.line)}{by}\n"):
                cut = f"{len(plan.cuts) - i} cut rows and everything after them not shown"
                break

    if (plan.enforcing or (plan.staged and plan.has_changes)) and cut is None:
        for i, block in enumerate(blocks := _staged_blocks(plan)):
            if not add(block):
                cut = f"{len(blocks) - i} lines about staged policies and everything after them not shown"
                break

    if plan.warnings and cut is None:
        add("\n#### Warnings\n\n")
        for i, w in enumerate(plan.warnings):
            mark = "⚠️" if w.severity == "warning" else "ℹ️"
            detail = f": {w.detail}" if w.detail else ""
            if not add(f"- {mark} **{_cell(w.summary)}**{_cell(detail)}\n"):
                cut = f"{len(plan.warnings) - i} warnings and every node not shown"
                break

    changed = [i for i, n in enumerate(plan.nodes) if n.changes]
    if cut is None:
        for k, i in enumerate(changed):
            node = plan.nodes[i]
            s = Summary.of(node.changes)
            title = f"{node.node}: {s.add} to add, {s.change} to change, {s.destroy} to destroy"
            lines = _diff_lines(plan, i)
            block, shown = _node_block(lines, title, budget - size)
            if shown == 0 and lines:
                cut = f"{len(changed) - k} nodes not shown"
                break
            if not add(block):
                cut = f"{len(changed) - k} nodes not shown"
                break
            if shown < len(lines):
                rest = len(changed) - k - 1
                cut = f"{len(lines) - shown} lines of {node.node} and {rest} more nodes not shown"
                break

    text = "".join(parts)
    if cut is not None:
        text += _CUT_NOTE.format(limit=limit, what=cut)
    assert len(text) < limit
    return text
