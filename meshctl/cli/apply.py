"""`meshctl apply [PLAN]`: roll a plan out node by node, verify, revert on failure."""

from __future__ import annotations

from enum import StrEnum
from pathlib import Path
from typing import Annotated

import typer

from meshctl.cli.main import app
from meshctl.cli.options import LockTimeoutOpt, lock_wait
from meshctl.cli.plan import Output, RepoOpt, print_plan, stderr
from meshctl.errors import ApplyError


class RollbackScope(StrEnum):
    node = "node"
    all = "all"


def progress_printer() -> object:
    """An on_event callback: one timestamped line per engine step, on stderr (rich)."""
    from meshctl.cli.progress import LinePrinter

    return LinePrinter(stderr())


def report_outcome(outcome: object) -> None:
    result = outcome.result  # type: ignore[attr-defined]
    print(result.summary())
    if not result.ok:
        raise ApplyError(f"apply of {outcome.plan_id} failed and was reverted as configured")  # type: ignore[attr-defined]
    print(f"State serial is now {outcome.serial}.")  # type: ignore[attr-defined]


@app.command("apply")
def apply(
    plan_file: Annotated[Path | None, typer.Argument(help="A saved plan (default: plan now, ask).")] = None,
    auto_approve: Annotated[bool, typer.Option("--auto-approve", help="Apply without asking.")] = False,
    rollback: Annotated[
        RollbackScope | None, typer.Option("--rollback", help="On failure revert: node or all.")
    ] = None,
    repo: RepoOpt = Path("."),
    output: Annotated[Output, typer.Option("--output", "-o", help="How to show the plan it makes.")] = (
        Output.text),
    lock_timeout: LockTimeoutOpt = "0s",
    force_enforce: Annotated[bool, typer.Option(
        "--force-enforce", help="Enforce staged policies even when [rollout] requireCleanAudit objects."
    )] = False,
) -> None:
    """Apply a plan: canary first, then batches; each node is journalled, verified, reverted on failure.
    Without PLAN, plan now, show it and ask."""
    with lock_wait(lock_timeout):
        _apply(plan_file, auto_approve, rollback, repo, output, force_enforce)


def _apply(plan_file: Path | None, auto_approve: bool, rollback: RollbackScope | None, repo: Path,
           output: Output, force_enforce: bool = False) -> None:
    from meshctl.app.apply import apply_plan
    from meshctl.app.plan import make_plan
    from meshctl.app.workspace import ensure_not_interrupted, open_workspace
    from meshctl.cli.progress import apply_progress
    from meshctl.plan import read_plan

    scope = rollback.value if rollback else None
    ws = open_workspace(repo)
    ensure_not_interrupted(ws.state_dir)  # before the lock: a killed apply leaves both behind
    if plan_file is not None:
        plan = read_plan(plan_file)
        with apply_progress(stderr()) as sink:  # live on a terminal, timestamped lines otherwise
            outcome = apply_plan(ws, plan, rollback=scope, on_event=sink, force_enforce=force_enforce)
        report_outcome(outcome)
        return
    with ws.lock("apply"):
        plan = make_plan(ws, lock_held=True).plan
        print_plan(plan, output)
        if not plan.has_changes:
            return
        if not auto_approve and not typer.confirm("\nApply these changes?", default=False, err=True):
            print("Apply cancelled.")
            raise typer.Exit(1)
        with apply_progress(stderr()) as sink:
            outcome = apply_plan(ws, plan, rollback=scope, on_event=sink, lock_held=True,
                                 force_enforce=force_enforce)
    report_outcome(outcome)
