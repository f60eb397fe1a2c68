"""`meshctl plan`: desired repo vs the live nodes -> a reviewable, saved plan."""

from __future__ import annotations

import sys
from enum import StrEnum
from pathlib import Path
from typing import Annotated

import typer
from rich.console import Console

from meshctl.cli.main import app


class Output(StrEnum):
    text = "text"
    json = "json"
    markdown = "markdown"


RepoOpt = Annotated[Path, typer.Option("-C", "--repo", help="Desired-state repo (with meshctl.toml).")]
OutputOpt = Annotated[Output, typer.Option("--output", "-o", help="text, json or markdown.")]
DetailedOpt = Annotated[
    bool, typer.Option("--detailed-exitcode", help="Exit 0 when nothing changes, 2 when changes are present.")
]


def stderr() -> Console:
    return Console(stderr=True, highlight=False, soft_wrap=True)


def print_plan(plan: object, output: Output) -> None:
    from meshctl.report import render_json, render_markdown, render_text

    if output is Output.json:
        sys.stdout.write(render_json(plan))  # type: ignore[arg-type]
    elif output is Output.markdown:
        sys.stdout.write(render_markdown(plan))  # type: ignore[arg-type]
    else:
        Console(highlight=False, soft_wrap=True).print(render_text(plan), end="")  # type: ignore[arg-type]


@app.command("plan")
def plan(
    repo: RepoOpt = Path("."),
    ref: Annotated[str | None, typer.Option("--ref", help="Plan the repo at this git revision.")] = None,
    out: Annotated[Path | None, typer.Option("--out", help="Plan file (default: plans/).")] = None,
    node: Annotated[list[str] | None, typer.Option("--node", help="Only this node (repeatable).")] = None,
    detailed_exitcode: DetailedOpt = False,
    output: OutputOpt = Output.text,
) -> None:
    """Compare the desired state with every node's live datapath and save the plan."""
    from meshctl.workflow import make_plan, open_workspace, save_plan

    ws = open_workspace(repo, ref)
    outcome = make_plan(ws, node or ())
    print_plan(outcome.plan, output)
    # Like Terraform: a plan with nothing to do is only written when asked for with --out.
    if outcome.plan.has_changes or out is not None:
        path = save_plan(ws, outcome.plan, out)
        stderr().print(f"Saved the plan to {path}; apply it with `meshctl apply {path} -C {repo}`")
    if detailed_exitcode and outcome.plan.has_changes:
        raise typer.Exit(2)
