"""`meshctl identity list|get`: the numeric identities the compiler gives label sets."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Annotated

import typer

from meshctl.catalog import Catalog
from meshctl.cli.main import app
from meshctl.cli.options import TextOrJson
from meshctl.errors import MeshctlError

identity_app = typer.Typer(help="Show security identities (label sets and their pods).", no_args_is_help=True)
app.add_typer(identity_app, name="identity")

RepoOpt = Annotated[Path | None, typer.Option("-C", "--repo", help="desired-state repository")]
OutputOpt = Annotated[TextOrJson, typer.Option("-o", "--output", help="text or json.")]


def _catalog(repo: Path | None) -> Catalog:
    from meshctl.cli.policy import load_for_trace

    return load_for_trace(repo or Path("."), None, None).catalog


@identity_app.command("list")
def list_cmd(repo: RepoOpt = None, output: OutputOpt = TextOrJson.text) -> None:
    """Every cluster identity with its labels and pods (numbers from the state's identity table;
    label sets not allocated yet get the numbers the next plan would give them)."""
    cat = _catalog(repo)
    rows = [info for ident, info in cat.identities.items() if ident >= 256]
    if output is TextOrJson.json:
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
    repo: RepoOpt = None,
    output: OutputOpt = TextOrJson.text,
) -> None:
    """One identity: its labels and the pods that carry it."""
    info = _catalog(repo).identities.get(ident)
    if info is None:
        raise MeshctlError(
            f"no identity {ident} in this desired state (reserved 1-8, cluster identities from 256; "
            "`meshctl identity list` shows them)"
        )
    if output is TextOrJson.json:
        body = {"id": info.identity, "labels": list(info.labels), "pods": list(info.pods)}
        typer.echo(json.dumps(body, indent=2))
        return
    typer.echo(f"identity {info.identity}")
    typer.echo("labels:")
    for label in info.labels:
        typer.echo(f"  {label}")
    if info.pods:
        typer.echo("pods:")
        for pod in info.pods:
            typer.echo(f"  {pod}")
