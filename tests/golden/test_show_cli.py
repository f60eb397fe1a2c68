"""`meshctl show` renders a saved plan in each format and refuses a tampered one."""

from __future__ import annotations

import json
from pathlib import Path

from golden_scenario import make_plan
from typer.testing import CliRunner

from meshctl.cli.main import app
from meshctl.errors import PlanError
from meshctl.plan import write_plan

DATA = Path(__file__).parent / "data"


def test_show_formats_and_tamper(tmp_path: Path) -> None:
    path = write_plan(make_plan(), tmp_path / "p.json")
    runner = CliRunner()
    text = runner.invoke(app, ["show", str(path)])
    assert text.exit_code == 0, text.output
    assert text.output == (DATA / "plan_basic.txt").read_text()
    md = runner.invoke(app, ["show", str(path), "-o", "markdown"])
    assert md.output == (DATA / "plan_basic.md").read_text()
    js = runner.invoke(app, ["show", str(path), "-o", "json"])
    assert json.loads(js.output)["plan_id"] == make_plan().plan_id
    doc = json.loads(path.read_text())
    doc["state"]["serial"] = 99
    path.write_text(json.dumps(doc))
    bad = runner.invoke(app, ["show", str(path)])
    assert bad.exit_code != 0 and isinstance(bad.exception, PlanError)
