"""Renderers of an ImpactReport: text for terminals, JSON for tools, markdown for PR comments.

They only render. The markdown is cut below MARKDOWN_LIMIT (GitHub refuses comments over
65,536 characters) between whole blocks, ending with a line that links to the full report.
"""

from __future__ import annotations

import json
import time
from collections.abc import Sequence

from meshctl.impact.http import EVERY
from meshctl.impact.model import HttpChange, ImpactPair, ImpactReport, ReplayedFlow
from meshctl.report.mermaid import markdown_block, verdict_edge

MARKDOWN_LIMIT = 65_000
EXAMPLES = 10  # replayed flows shown in text and markdown
MARKER = "<!-- meshctl-impact -->"


def render_json(report: ImpactReport) -> str:
    return json.dumps(report.to_json(), indent=2, sort_keys=True) + "\n"


def _when(ns: int) -> str:
    return time.strftime("%Y-%m-%d %H:%M:%S UTC", time.gmtime(ns / 1e9))


def _headline(report: ImpactReport) -> str:
    broken, opened = len(report.breaking), len(report.opening)
    if not report.pairs:
        return "No connection changes verdict."
    return f"{broken} connection(s) would be DROPPED, {opened} would be newly FORWARDED."


def _replay_line(report: ImpactReport) -> str:
    r = report.replay
    if r is None:
        return ""
    if r.note:
        return f"Flow replay: {r.note}"
    line = (f"{r.dropped_flow_count} flows seen in the last {r.window} would be DROPPED "
            f"({len(r.would_drop)} of {r.connections} distinct connections, {r.flows_seen} flows replayed)")
    if r.would_allow:
        line += f"; {sum(f.count for f in r.would_allow)} recorded drops would be FORWARDED"
    return line + "."


def _http_effect(h: HttpChange) -> list[str]:
    """What starts and stops passing on one L7 port, in words."""
    if h.base == (EVERY,):
        return ["stop passing: every request that matches none of the head's shapes"]
    if h.head == (EVERY,):
        return ["start passing: every request that matches none of the base's shapes"]
    out = [f"start passing: {' | '.join(h.starts)}"] if h.starts else []
    return out + ([f"stop passing: {' | '.join(h.stops)}"] if h.stops else [])


def _http_heading(report: ImpactReport) -> str:
    return f"{len(report.http)} L7 port(s) change which HTTP requests pass (request shapes):"


def _requests_line(report: ImpactReport) -> str:
    r = report.replay
    if r is None or r.note or not r.requests_seen:
        return ""
    drop = [q for q in r.requests if q.head == "DROPPED"]
    allow = [q for q in r.requests if q.head == "FORWARDED"]
    return (f"HTTP replay: {sum(q.count for q in drop)} recorded request(s) would be DROPPED, "
            f"{sum(q.count for q in allow)} newly FORWARDED ({r.requests_seen} replayed; recorded requests "
            "carry no headers, so a rule that needs one judges them as sent without)")


def render_text(report: ImpactReport) -> str:
    out = [f"Impact of {report.base.short} -> {report.head.short} on cluster {report.cluster}",
           f"Inventory: {report.inventory} ({report.pods} pods)"]
    if report.policies_changed:
        out.append("Policy changes: " + ", ".join(report.policies_changed))
    out += ["", _headline(report)]
    for p in report.pairs:
        out.append(f"  {p.src} -> {p.dst}:{p.port}/{p.protocol}  {p.base} -> {p.head}")
        out += [f"      base: {r}" for r in p.base_rules]
        out += [f"      head: {r}" for r in p.head_rules]
    if report.http:
        out += ["", _http_heading(report)]
        for h in report.http:
            out.append(f"  {h.src} -> {h.dst}:{h.port}/tcp ({h.side} proxy)")
            out += [f"      base: {' | '.join(h.base)}", f"      head: {' | '.join(h.head)}"]
            out += [f"      {e}" for e in _http_effect(h)]
    line = _replay_line(report)
    if line:
        out += ["", line]
        for f in report.replay.changed[:EXAMPLES] if report.replay else ():
            out.append(f"  {f.count:>6} x {f.src} -> {f.dst}:{f.port}/{f.protocol}  {f.base} -> {f.head}"
                       f"  (last {_when(f.last_seen_ns)})")
    line = _requests_line(report)
    if line:
        out += ["", line + "."]
        for q in report.replay.requests[:EXAMPLES] if report.replay else ():
            out.append(f"  {q.count:>6} x {q.src} -> {q.dst}:{q.port} {q.method} {q.url}  "
                       f"{q.base} -> {q.head}  (last {_when(q.last_seen_ns)})")
    for w in report.warnings:
        out.append(f"Warning: {w}")
    return "\n".join(out) + "\n"


def _cell(text: str) -> str:
    return text.replace("|", "\\|").replace("\n", " ")


def _verdict(v: str) -> str:
    return f"**{v}**" if v == "DROPPED" else v


def _pairs_table(pairs: Sequence[ImpactPair]) -> str:
    rows = ["| From | To | Port | Base | Head |", "| --- | --- | --- | --- | --- |"]
    rows += [f"| `{_cell(p.src)}` | `{_cell(p.dst)}` | {p.port}/{p.protocol} | {_verdict(p.base)} | "
             f"{_verdict(p.head)} |" for p in pairs]
    return "\n".join(rows) + "\n"


def _rules_block(pairs: Sequence[ImpactPair]) -> str:
    out = ["<details><summary>Rules responsible on each side</summary>", ""]
    for p in pairs:
        out.append(f"- `{_cell(p.src)}` → `{_cell(p.dst)}` {p.port}/{p.protocol}")
        out += [f"  - base ({p.base}): {_cell(r)}" for r in p.base_rules]
        out += [f"  - head ({p.head}): {_cell(r)}" for r in p.head_rules]
    out += ["", "</details>", ""]
    return "\n".join(out)


def _flows_block(flows: Sequence[ReplayedFlow]) -> str:
    out = ["<details><summary>Recorded connections that change verdict</summary>", "",
           "| Flows | From | To | Port | Base | Head | Last seen | Head rules |",
           "| ---: | --- | --- | --- | --- | --- | --- | --- |"]
    out += [f"| {f.count} | `{_cell(f.src)}` | `{_cell(f.dst)}` | {f.port}/{f.protocol} | {_verdict(f.base)} "
            f"| {_verdict(f.head)} | {_when(f.last_seen_ns)} | {_cell('; '.join(f.head_rules))} |"
            for f in flows[:EXAMPLES]]
    if len(flows) > EXAMPLES:
        out.append(f"\n…and {len(flows) - EXAMPLES} more in the JSON report.")
    out += ["", "</details>", ""]
    return "\n".join(out)


def _http_block(report: ImpactReport) -> str:
    rows = [f"**{_http_heading(report)}**", "", "| From | To | Port | Base | Head | Effect |",
            "| --- | --- | --- | --- | --- | --- |"]
    rows += [f"| `{_cell(h.src)}` | `{_cell(h.dst)}` | {h.port}/tcp | {_cell(' | '.join(h.base))} | "
             f"{_cell(' | '.join(h.head))} | {_cell('; '.join(_http_effect(h)))} |" for h in report.http]
    return "\n".join(rows) + "\n"


def markdown_blocks(report: ImpactReport) -> list[str]:
    """The comment's blocks in order; the cut happens between blocks."""
    requests_drop = report.replay and any(q.head == "DROPPED" for q in report.replay.requests)
    stops = any(h.stops for h in report.http)
    warn = report.breaking or (report.replay and report.replay.would_drop) or requests_drop or stops
    icon = "⚠️" if warn else "✅"
    blocks = [
        f"{MARKER}\n### {icon} meshctl impact: `{report.cluster}` "
        f"{_cell(report.base.short)} → {_cell(report.head.short)}\n\n",
        f"**{_headline(report)}**\n\n",
    ]
    line = _replay_line(report)
    if line:
        blocks.append(f"**{line}**\n\n")
    if report.policies_changed:
        changes = ", ".join(f"`{_cell(c)}`" for c in report.policies_changed)
        blocks.append(f"Policy changes: {changes}\n\n")
    if report.pairs:
        graph = markdown_block(verdict_edge(p.src, p.dst, p.protocol, p.port, p.head) for p in report.pairs)
        blocks += [graph + "\n", _pairs_table(report.pairs) + "\n", _rules_block(report.pairs) + "\n"]
    if report.http:
        blocks.append(_http_block(report) + "\n")
    if report.replay and report.replay.changed:
        blocks.append(_flows_block(report.replay.changed) + "\n")
    line = _requests_line(report)
    if line:
        blocks.append(f"{line}.\n\n")
    for w in report.warnings:
        blocks.append(f"> **Warning:** {_cell(w)}\n\n")
    blocks.append(f"<sub>Judged on the {_cell(report.inventory)} ({report.pods} pods).</sub>\n")
    return blocks


def cut_markdown(blocks: Sequence[str], limit: int = MARKDOWN_LIMIT, link: str | None = None) -> str:
    """Whole blocks while they fit below `limit` (0 = no limit), then a line linking the rest."""
    footer = f"\n[Full report]({link})\n" if link else ""
    out: list[str] = []
    used = len(footer)
    for i, block in enumerate(blocks):
        if limit and used + len(block) > limit - 200:
            where = f"[the full report]({link})" if link else "the uploaded artifact"
            rest = len(blocks) - i
            out.append(f"\n_Cut: {rest} more section(s) exceed GitHub's comment limit; see {where}._\n")
            break
        out.append(block)
        used += len(block)
    return "".join(out) + footer


def render_markdown(report: ImpactReport, limit: int = MARKDOWN_LIMIT, link: str | None = None,
                    appendix: Sequence[str] = ()) -> str:
    """The PR comment body: the impact, then `appendix` markdown (e.g. the plan), then the link."""
    blocks = markdown_blocks(report) + [f"\n---\n\n{a.rstrip()}\n" for a in appendix if a.strip()]
    return cut_markdown(blocks, limit, link)
