"""`meshctl show PLAN`: render a saved plan as text, JSON or markdown (a PR comment)."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated

import typer

from meshctl.cli.main import app
from meshctl.cli.options import Output
from meshctl.cli.plan import print_plan


@app.command("show")
def show(
    plan_file: Annotated[Path, typer.Argument(help="A plan file written by `meshctl plan --out`.")],
    output: Annotated[Output, typer.Option("--output", "-o", help="text, json or markdown.")] = Output.text,
) -> None:
    """Show a saved plan (the plan file is checked: version and plan_id)."""
    from meshctl.plan import read_plan

    print_plan(read_plan(plan_file), output)
