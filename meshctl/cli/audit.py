"""`meshctl audit report`: what each staged policy would have dropped and allowed (for the PR)."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Annotated

import typer

from meshctl.cli.main import app
from meshctl.cli.options import Output

RepoOpt = Annotated[Path, typer.Option("-C", "--repo", help="Desired-state repo (with meshctl.toml).")]
audit_app = typer.Typer(help="Staged (audit-mode) policies: their AUDIT flows.", no_args_is_help=True)
app.add_typer(audit_app, name="audit")


@audit_app.command("report")
def report(
    repo: RepoOpt = Path("."),
    since: Annotated[str | None, typer.Option(
        "--since", metavar="DURATION",
        help="Only the last DURATION (24h, 30m); default: since each was staged.")] = None,
    output: Annotated[Output, typer.Option("-o", "--output", help="text, markdown or json.")] = Output.text,
) -> None:
    """Per staged policy the last applies loaded: the connections it would have dropped and allowed,
    from the AUDIT flows the nodes recorded."""
    from datetime import UTC, datetime

    from meshctl.audit import audit_report
    from meshctl.flows.context import repo_info
    from meshctl.flows.filters import parse_duration
    from meshctl.report.audit import render_markdown, render_text, to_json
    from meshctl.state import load_state

    window = parse_duration(since, "--since") if since is not None else None
    info = repo_info(repo)
    state = load_state(info.state_dir)
    now = datetime.now(UTC)
    rows = audit_report(info.state_dir, {p: r["since"] for p, r in sorted(state.staged.items())}, window, now)
    if output is Output.json:
        print(json.dumps(to_json(info.cluster, rows, now), indent=2, sort_keys=True))
    elif output is Output.markdown:
        print(render_markdown(info.cluster, rows, now), end="")
    else:
        print(render_text(info.cluster, rows, now), end="")
