"""`meshctl drift`: the live nodes against the desired state at a git revision (default HEAD)."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Annotated

import typer

from meshctl.cli.apply import progress_printer, report_outcome
from meshctl.cli.main import app
from meshctl.cli.options import LockTimeoutOpt, lock_wait
from meshctl.cli.plan import Output, OutputOpt, RepoOpt, stderr


@app.command("drift")
def drift(
    repo: RepoOpt = Path("."),
    detailed_exitcode: Annotated[
        bool, typer.Option("--detailed-exitcode", help="Exit 2 when drift was found (even if healed).")
    ] = False,
    heal: Annotated[bool, typer.Option("--heal", help="Apply the desired state to drifted nodes.")] = False,
    ref: Annotated[str | None, typer.Option(
        "--ref", metavar="REV", help="The git revision to compare with (default: HEAD; the working tree "
        "outside git).")] = None,
    output: OutputOpt = Output.text,
    lock_timeout: LockTimeoutOpt = "0s",
) -> None:
    """Compare the live datapath with the desired state at a git revision; --heal applies it.
    Exit 1 when a node could not be checked."""
    with lock_wait(lock_timeout):
        _drift(repo, detailed_exitcode, heal, output, ref)


def _drift(repo: Path, detailed_exitcode: bool, heal: bool, output: Output, ref: str | None) -> None:
    from meshctl.app import drift as drift_mod
    from meshctl.app.apply import apply_plan

    ws, rev = drift_mod.open_drift_workspace(repo, ref)
    report = drift_mod.detect_drift(ws, rev)
    if output is Output.json:
        print(json.dumps(report.to_json(), indent=2, sort_keys=True))
    elif output is Output.markdown:
        print(drift_mod.render_markdown(report), end="")
    else:
        print(drift_mod.render_text(report))
    if heal and report.drifted:
        stderr().print(f"Healing: applying the desired state at {report.revision} to the drifted nodes")
        outcome = apply_plan(ws, drift_mod.heal_plan(report), on_event=progress_printer())  # type: ignore[arg-type]
        report_outcome(outcome)
    if not report.checked:
        unread = ", ".join(report.unread)
        stderr().print(f"Error: {len(report.unread)} node(s) could not be checked: {unread}")
        raise typer.Exit(1)
    if detailed_exitcode and report.drifted:
        raise typer.Exit(2)
