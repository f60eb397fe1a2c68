"""`meshctl drift`: what changed on the nodes outside meshctl since the last apply."""

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
    heal: Annotated[bool, typer.Option("--heal", help="Restore the applied intent.")] = False,
    output: OutputOpt = Output.text,
    lock_timeout: LockTimeoutOpt = "0s",
) -> None:
    """Compare the live datapath with the last applied intent; --heal puts it back."""
    with lock_wait(lock_timeout):
        _drift(repo, detailed_exitcode, heal, output)


def _drift(repo: Path, detailed_exitcode: bool, heal: bool, output: Output) -> None:
    from meshctl.app import drift as drift_mod
    from meshctl.app.apply import apply_plan
    from meshctl.app.workspace import open_workspace

    ws = open_workspace(repo)
    report = drift_mod.detect_drift(ws)
    if output is Output.json:
        print(json.dumps(report.to_json(), indent=2, sort_keys=True))
    elif output is Output.markdown:
        print(drift_mod.render_markdown(report), end="")
    else:
        print(drift_mod.render_text(report))
    if heal and report.drifted:
        stderr().print("Healing: applying the last applied intent to the drifted nodes")
        outcome = apply_plan(ws, drift_mod.heal_plan(report), on_event=progress_printer())  # type: ignore[arg-type]
        report_outcome(outcome)
    if detailed_exitcode and report.drifted:
        raise typer.Exit(2)
