"""`meshctl show PLAN`: render a saved plan as text, JSON or markdown (a PR comment)."""

from __future__ import annotations

import sys
from pathlib import Path
from typing import Annotated

import typer
from rich.console import Console

from meshctl.cli.main import app
from meshctl.cli.options import Output
from meshctl.plan import read_plan
from meshctl.report import render_json, render_markdown, render_text


@app.command("show")
def show(
    plan_file: Annotated[Path, typer.Argument(help="A plan file written by `meshctl plan --out`.")],
    output: Annotated[Output, typer.Option("--output", "-o", help="text, json or markdown.")] = Output.text,
) -> None:
    """Show a saved plan (the plan file is checked: version and plan_id)."""
    plan = read_plan(plan_file)
    if output is Output.json:
        sys.stdout.write(render_json(plan))
    elif output is Output.markdown:
        sys.stdout.write(render_markdown(plan))
    else:
        Console(highlight=False, soft_wrap=True).print(render_text(plan), end="")
