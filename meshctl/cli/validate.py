"""`meshctl validate`: load and compile the desired state, no nodes; every problem with file:line."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Annotated

import typer

from meshctl.cli.main import app
from meshctl.cli.options import TextOrJson

RepoOpt = Annotated[Path, typer.Option("-C", "--repo", help="Desired-state repo (with meshctl.toml).")]


@app.command("validate")
def validate(
    repo: RepoOpt = Path("."),
    output: Annotated[TextOrJson, typer.Option("-o", "--output", help="text or json.")] = TextOrJson.text,
) -> None:
    """Check the repo without touching any node: exit 0 when it is valid, 1 with every problem."""
    from meshctl.validation import validate_repo

    result = validate_repo(repo)
    if output is TextOrJson.json:
        print(json.dumps(result.to_json(), indent=2, sort_keys=True))
        raise typer.Exit(0 if result.ok else 1)
    for err in result.errors:
        print(f"Error: {err}")
    for warning in result.warnings:
        print(f"Warning: {warning}")
    if result.ok:
        print(f"{repo}: valid ({result.nodes} node(s), {result.pods} pod(s), {result.policies} "
              f"policy(ies) compiled; {len(result.warnings)} warning(s))")
    else:
        print(f"{repo}: {len(result.errors)} problem(s)")
    raise typer.Exit(0 if result.ok else 1)
