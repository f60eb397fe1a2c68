"""Markdown stays under the comment limit, cut only between blocks, with a note."""

from __future__ import annotations

import re
from datetime import UTC, datetime
from ipaddress import IPv4Network

from rich.console import Console

from meshctl.catalog import Catalog
from meshctl.nodestate import FrozenMap, IpcacheEntry, NodeState
from meshctl.plan import build_plan
from meshctl.report import render_markdown, render_text


def _big_plan(nodes: int, entries: int):
    intended = {
        f"node-{n}": NodeState(
            f"node-{n}",
            ipcache=FrozenMap({IPv4Network(f"10.{n}.{i // 250}.{i % 250}/32"): IpcacheEntry(256 + i)
                               for i in range(entries)}),
        )
        for n in range(nodes)
    }
    observed = {name: NodeState(name) for name in intended}
    created = datetime(2025, 1, 1, tzinfo=UTC)
    return build_plan(observed, intended, Catalog(), impact=False, created_at=created)


def _balanced(md: str) -> None:
    assert md.count("<details>") == md.count("</details>")
    assert md.count("```") % 2 == 0
    for line in md.splitlines():
        if line.startswith("|"):
            assert line.endswith("|"), line


def test_small_plan_is_not_cut() -> None:
    md = render_markdown(_big_plan(2, 3))
    assert "Output cut" not in md
    assert md.count("<details>") == 2
    _balanced(md)


def test_large_plan_is_cut_between_blocks_with_a_note() -> None:
    plan = _big_plan(30, 400)
    md = render_markdown(plan)
    assert len(md) < 65_000
    assert "Output cut at 65000 characters" in md
    assert "meshctl show PLAN" in md
    _balanced(md)
    assert md.startswith("### meshctl plan: Plan: 12000 to add, 0 to change, 0 to destroy.")


def test_cut_inside_one_huge_node_closes_its_details() -> None:
    md = render_markdown(_big_plan(1, 3000), limit=5_000)
    assert len(md) < 5_000
    _balanced(md)
    assert re.search(r"# \.\.\. \d+ more lines not shown", md)


def test_text_is_plain_without_a_terminal_and_coloured_on_one() -> None:
    plan = _big_plan(1, 1)
    plain = Console(force_terminal=False, width=200, highlight=False)
    with plain.capture() as cap:
        plain.print(render_text(plan))
    assert "\x1b[" not in cap.get() and "  + node-0 ipcache 10.0.0.0/32" in cap.get()
    tty = Console(force_terminal=True, width=200, highlight=False)
    with tty.capture() as cap:
        tty.print(render_text(plan))
    assert "\x1b[32m" in cap.get()  # green create
