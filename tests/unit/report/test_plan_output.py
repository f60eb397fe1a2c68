"""`meshctl plan`'s output: the same characters on a pipe (plain, without rich's console) as rich
prints in colour on a terminal, and the JSON output is the plan file's text."""

from __future__ import annotations

import re
import sys
from pathlib import Path

import pytest

sys.path.insert(0, str(Path(__file__).resolve().parents[2] / "golden"))
from golden_scenario import make_plan

import meshctl.cli.main  # noqa: F401  (first: the command modules import one another through it)
from meshctl.cli.options import Output
from meshctl.cli.plan import print_plan
from meshctl.plan.planfile import plan_to_text, read_plan, write_plan

ANSI = re.compile(r"\x1b\[[0-9;]*m")


def test_a_pipe_gets_the_characters_a_terminal_gets_in_colour(
    capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch
) -> None:
    plan = make_plan()
    monkeypatch.delenv("FORCE_COLOR", raising=False)
    monkeypatch.delenv("TTY_COMPATIBLE", raising=False)
    print_plan(plan, Output.text)
    plain = capsys.readouterr().out
    monkeypatch.setenv("FORCE_COLOR", "1")
    print_plan(plan, Output.text)
    coloured = capsys.readouterr().out
    assert "\x1b[" not in plain and "\x1b[" in coloured
    assert ANSI.sub("", coloured) == plain
    assert plain.startswith(f"meshctl plan {plan.plan_id[:19]}") and "to destroy" in plain


def test_the_json_output_is_the_saved_plan(capsys: pytest.CaptureFixture[str], tmp_path: Path) -> None:
    plan = make_plan()
    text = print_plan(plan, Output.json)
    assert text == capsys.readouterr().out == plan_to_text(plan)
    saved = write_plan(plan, tmp_path / "plan.json", text)
    assert saved.read_text() == text and read_plan(saved) == plan
