"""`meshctl plan`: desired repo vs the live nodes -> a reviewable, saved plan."""

from __future__ import annotations

import os
import sys
from pathlib import Path
from typing import TYPE_CHECKING, Annotated

import typer

from meshctl.cli.main import app
from meshctl.cli.options import LockTimeoutOpt, Output, lock_wait
from meshctl.gcpause import paused_gc

if TYPE_CHECKING:
    from rich.console import Console

__all__ = ["DetailedOpt", "Output", "OutputOpt", "RepoOpt", "note", "print_plan", "stderr"]

RepoOpt = Annotated[Path, typer.Option("-C", "--repo", help="Desired-state repo (with meshctl.toml).")]
OutputOpt = Annotated[Output, typer.Option("--output", "-o", help="text, json or markdown.")]
DetailedOpt = Annotated[
    bool, typer.Option("--detailed-exitcode", help="Exit 0 when nothing changes, 2 when changes are present.")
]


def stderr() -> Console:
    """A rich console on stderr, for the commands that style or animate (rich takes 18 ms to import)."""
    from rich.console import Console

    return Console(stderr=True, highlight=False, soft_wrap=True)


def note(message: str) -> None:
    """One plain line on stderr: paths and settings may hold brackets that rich takes for markup."""
    print(message, file=sys.stderr)


@paused_gc()  # a plan of 10,000 lines is as many small acyclic objects
def print_plan(plan: object, output: Output) -> str | None:
    """Print `plan` as asked; the JSON text when that was the output (it is the plan file's)."""
    if output is Output.json:
        from meshctl.report.plan_json import render_json

        text = render_json(plan)  # type: ignore[arg-type]
        sys.stdout.write(text)
        return text
    if output is Output.markdown:
        from meshctl.report.plan_markdown import render_markdown

        sys.stdout.write(render_markdown(plan))  # type: ignore[arg-type]
        return None
    from meshctl.report.plan_text import render_text

    styled = render_text(plan)  # type: ignore[arg-type]
    # Where rich would print no colour (its own test), the same characters without its console:
    if not (sys.stdout.isatty() or os.environ.get("FORCE_COLOR") or os.environ.get("TTY_COMPATIBLE") == "1"):
        sys.stdout.write(styled.plain)
        return None
    from rich.console import Console

    Console(highlight=False, soft_wrap=True).print(styled, end="")
    return None


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
    from meshctl.app.increment import incremental_plan
    from meshctl.app.plan import make_plan
    from meshctl.app.workspace import open_workspace
    from meshctl.plan import write_plan

    with lock_wait(lock_timeout):
        fast = None if full or ref is not None or node else incremental_plan(repo)
        if fast is not None:
            planned = fast.plan
            note(fast.summary)
        else:
            planned = make_plan(open_workspace(repo, ref), node or (), record=True).plan
    text = print_plan(planned, output)
    # Like Terraform: the plan is written only when asked for with --out.
    if out is not None:
        path = write_plan(planned, out, text)
        note(f"Saved the plan to {path}; apply it with `meshctl apply {path} -C {repo}`")
    elif planned.has_changes:
        note("Note: the plan was not saved (use --out PLAN); `meshctl apply` plans again and "
             "asks before it changes anything.")
    if detailed_exitcode and planned.has_changes:
        raise typer.Exit(2)
