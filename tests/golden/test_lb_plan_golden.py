"""Golden plans of a load-balancer mode change and a Maglev scale-out: readable, not tables.

A plan is for people: a Maglev table is shown by its size, the share of slots per backend
before and after and how many slots move; no text line exceeds 300 characters; the full table
stays in `-o json`. Regenerate with MESHCTL_UPDATE_GOLDEN=1 and review the diff.
"""

from __future__ import annotations

import json
import re

import pytest
from lb_scenario import mode_change, scale_out
from test_plan_golden import _check

from meshctl.nodestate import _unpack_ids
from meshctl.plan import Plan
from meshctl.plan.change import ChangeKind
from meshctl.report import render_json, render_markdown, render_text
from meshctl.report.plan_text import MAX_LINE

PLANS = {"lb_mode": mode_change, "lb_scale": scale_out}
BASE64_RUN = re.compile(r"[A-Za-z0-9+/=]{200,}")


@pytest.fixture(scope="module", params=sorted(PLANS))
def case(request: pytest.FixtureRequest) -> tuple[str, Plan]:
    return request.param, PLANS[request.param]()


def test_text_golden(case: tuple[str, Plan]) -> None:
    name, plan = case
    _check(f"plan_{name}.txt", render_text(plan).plain)


def test_markdown_golden(case: tuple[str, Plan]) -> None:
    name, plan = case
    _check(f"plan_{name}.md", render_markdown(plan))


def test_no_text_line_over_the_limit_and_no_table(case: tuple[str, Plan]) -> None:
    _, plan = case
    for text in (render_text(plan).plain, render_markdown(plan)):
        assert not BASE64_RUN.search(text), "a Maglev table is printed as data"
    lines = render_text(plan).plain.splitlines()
    assert max(len(line) for line in lines) <= MAX_LINE


def test_json_keeps_the_full_tables(case: tuple[str, Plan]) -> None:
    _, plan = case
    doc = json.loads(render_json(plan))
    tables = [c["change"]["after"]["maglev"] for node in doc["nodes"] for c in node["resource_changes"]
              if c["type"] == "lb-service"]
    assert tables and all(len(_unpack_ids(t)) == 16381 for t in tables)


def test_mode_change_names_the_selection_change() -> None:
    text = render_text(mode_change()).plain
    assert "maglev: (none) -> <16381 slots, sha256:" in text
    assert ("random -> Maglev 16381 slots, every connection is selected again; share per backend: "
            "10.101.2.10:3000/TCP 33.3% -> 33.3%") in text
    assert "settings mode=snat -> mode=dsr, algorithm=random -> algorithm=maglev" in text


def test_scale_out_counts_the_slots_that_move() -> None:
    plan = scale_out()
    svc = next(c for n in plan.nodes for c in n.changes if c.kind is ChangeKind.LB_SERVICE)
    before, after = _unpack_ids(svc.before["maglev"]), _unpack_ids(svc.after["maglev"])  # type: ignore[index]
    moved = sum(1 for x, y in zip(before, after, strict=True) if x != y)
    assert 0.2 < moved / len(after) < 0.3  # Maglev's minimal disruption: about 1/4 for a 4th backend
    assert f"{moved} of 16381 slots ({moved / 16381 * 100:.1f}%) change backend" in svc.reason
    assert "10.101.2.13:3000/TCP 0.0% -> 25.0%" in svc.reason
    assert "10.101.2.10:3000/TCP 33.3% -> 25.0%" in svc.reason
