"""Golden renders of a fixed plan. Regenerate with MESHCTL_UPDATE_GOLDEN=1 and review the diff."""

from __future__ import annotations

import os
from pathlib import Path

import pytest
from golden_scenario import make_plan

from meshctl.plan import Plan
from meshctl.report import render_json, render_markdown, render_text

HERE = Path(__file__).parent / "data"
UPDATE = os.environ.get("MESHCTL_UPDATE_GOLDEN") == "1"


@pytest.fixture(scope="module")
def plan() -> Plan:
    return make_plan()


def _check(name: str, text: str) -> None:
    path = HERE / name
    if UPDATE:
        path.parent.mkdir(exist_ok=True)
        path.write_text(text)
    assert path.exists(), f"{path} missing: run with MESHCTL_UPDATE_GOLDEN=1"
    assert text == path.read_text(), f"{name} differs from its golden file (MESHCTL_UPDATE_GOLDEN=1 accepts)"


def test_text(plan: Plan) -> None:
    _check("plan_basic.txt", render_text(plan).plain)


def test_json(plan: Plan) -> None:
    _check("plan_basic.json", render_json(plan))


def test_markdown(plan: Plan) -> None:
    _check("plan_basic.md", render_markdown(plan))
