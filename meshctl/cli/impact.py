"""`meshctl impact`: what a desired-state change (base -> head revision) does to connectivity."""

from __future__ import annotations

import sys
from pathlib import Path
from typing import Annotated

import typer

from meshctl.cli.main import app
from meshctl.cli.plan import Output, OutputOpt, RepoOpt


@app.command("impact")
def impact(
    base: Annotated[str, typer.Option("--base", help="Base git revision (e.g. main).")],
    head: Annotated[
        str | None, typer.Option("--head", help="Head git revision (default: the working tree).")
    ] = None,
    repo: RepoOpt = Path("."),
    flows_since: Annotated[
        str, typer.Option("--flows-since", help="Replay the flows recorded over this window (0 = off).")
    ] = "24h",
    output: OutputOpt = Output.text,
    link: Annotated[
        str | None, typer.Option("--link", help="Markdown: link to the full report (e.g. an artifact).")
    ] = None,
    append: Annotated[
        list[Path] | None, typer.Option("--append", help="Markdown: append this file (e.g. a plan).")
    ] = None,
    max_chars: Annotated[
        int, typer.Option("--max-chars", help="Markdown: cut below this many characters (0 = never).")
    ] = 65_000,
    no_lab: Annotated[
        bool, typer.Option("--no-lab", help="Do not take pod addresses from a running lab.")
    ] = False,
) -> None:
    """Compile both revisions against the HEAD revision's inventory (pods and namespaces; their
    addresses from the running lab when it is up, or the cluster with [inventory] source =
    "kubernetes") and list every (source, destination, port) whose verdict changes, with the
    rules on each side; then replay the flows recorded over --flows-since through both."""
    from meshctl.errors import MeshctlError
    from meshctl.impact import compare_revisions
    from meshctl.impact.recorded import recorded_flows
    from meshctl.impact.render import render_json, render_markdown, render_text
    from meshctl.source import load_desired

    flows, note = None, "off (--flows-since 0)"
    if flows_since not in ("0", "off"):
        # The flow store lives in the state dir, resolved against the repo path (same for any ref).
        state_dir = load_desired(repo, head).config.state_dir
        flows, note = recorded_flows(state_dir, flows_since)
    report, _ = compare_revisions(repo, base, head, flows=flows, window=flows_since, use_lab=not no_lab,
                                  replay_note=note)
    if output is Output.json:
        sys.stdout.write(render_json(report))
    elif output is Output.markdown:
        appendix = []
        for path in append or ():
            try:
                appendix.append(path.read_text())
            except OSError as err:
                raise MeshctlError(f"--append {path}: {err.strerror}") from None
        sys.stdout.write(render_markdown(report, limit=max_chars, link=link, appendix=appendix))
    else:
        sys.stdout.write(render_text(report))
