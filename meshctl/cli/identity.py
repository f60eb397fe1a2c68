"""`meshctl identity list|get`: the numeric identities the compiler gives label sets."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Annotated

import typer

from meshctl.cli.main import app
from meshctl.errors import MeshctlError

identity_app = typer.Typer(help="Show security identities (label sets and their pods).", no_args_is_help=True)
app.add_typer(identity_app, name="identity")


def _compiled(repo: Path):
    from meshctl.cli.policy import load_for_trace

    return load_for_trace(repo, None, None)


@identity_app.command("list")
def list_cmd(
    repo: Annotated[Path | None, typer.Option("-C", "--repo", help="desired-state repository")] = None,
    output: Annotated[str, typer.Option("-o", "--output", help="text or json")] = "text",
) -> None:
    """Every cluster identity with its labels and pods (numbers as a fresh state would give)."""
    cat = _compiled(repo or Path(".")).catalog
    rows = [info for ident, info in cat.identities.items() if ident >= 256]
    if output == "json":
        typer.echo(
            json.dumps(
                [{"id": i.identity, "labels": list(i.labels), "pods": list(i.pods)} for i in rows], indent=2
            )
        )
        return
    for info in rows:
        typer.echo(f"{info.identity:<8} {','.join(info.labels)}")
        for pod in info.pods:
            typer.echo(f"         {pod}")


@identity_app.command("get")
def get_cmd(
    ident: int = typer.Argument(..., metavar="ID"),
    repo: Annotated[Path | None, typer.Option("-C", "--repo", help="desired-state repository")] = None,
) -> None:
    """One identity: its labels and the pods that carry it."""
    info = _compiled(repo or Path(".")).catalog.identities.get(ident)
    if info is None:
        raise MeshctlError(f"no identity {ident}")
    typer.echo(f"identity {info.identity}")
    typer.echo("labels:")
    for label in info.labels:
        typer.echo(f"  {label}")
    if info.pods:
        typer.echo("pods:")
        for pod in info.pods:
            typer.echo(f"  {pod}")
