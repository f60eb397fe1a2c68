"""`meshctl plan`: desired repo vs the live nodes -> a reviewable, saved plan."""

from __future__ import annotations

import sys
from pathlib import Path
from typing import Annotated

import typer
from rich.console import Console

from meshctl.cli.main import app
from meshctl.cli.options import LockTimeoutOpt, Output, lock_wait
from meshctl.gcpause import paused_gc

__all__ = ["DetailedOpt", "Output", "OutputOpt", "RepoOpt", "print_plan", "stderr"]

RepoOpt = Annotated[Path, typer.Option("-C", "--repo", help="Desired-state repo (with meshctl.toml).")]
OutputOpt = Annotated[Output, typer.Option("--output", "-o", help="text, json or markdown.")]
DetailedOpt = Annotated[
    bool, typer.Option("--detailed-exitcode", help="Exit 0 when nothing changes, 2 when changes are present.")
]


def stderr() -> Console:
    return Console(stderr=True, highlight=False, soft_wrap=True)


@paused_gc()  # a plan of 10,000 lines is as many small acyclic objects
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
    out: Annotated[Path | None, typer.Option(
        "--out", metavar="PLAN", help="Save the plan to this file, for `meshctl apply PLAN`.")] = None,
    node: Annotated[list[str] | None, typer.Option("--node", help="Only this node (repeatable).")] = None,
    detailed_exitcode: DetailedOpt = False,
    output: OutputOpt = Output.text,
    lock_timeout: LockTimeoutOpt = "0s",
    full: Annotated[bool, typer.Option(
        "--full", help="Compile everything and read every node whole, even when only policy files changed "
                       "since the last full plan that found nothing to do.")] = False,
) -> None:
    """Compare the desired state with every node's live datapath; save the plan with --out."""
    from meshctl.increment import incremental_plan
    from meshctl.plan import write_plan
    from meshctl.workflow import make_plan, open_workspace

    with lock_wait(lock_timeout):
        fast = None if full or ref is not None or node else incremental_plan(repo)
        if fast is not None:
            planned = fast.plan
            stderr().print(fast.summary)
        else:
            planned = make_plan(open_workspace(repo, ref), node or (), record=True).plan
    print_plan(planned, output)
    # Like Terraform: the plan is written only when asked for with --out.
    if out is not None:
        path = write_plan(planned, out)
        stderr().print(f"Saved the plan to {path}; apply it with `meshctl apply {path} -C {repo}`")
    elif planned.has_changes:
        stderr().print("Note: the plan was not saved (use --out PLAN); `meshctl apply` plans again and "
                       "asks before it changes anything.")
    if detailed_exitcode and planned.has_changes:
        raise typer.Exit(2)
