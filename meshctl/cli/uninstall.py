"""`meshctl uninstall --node NODE`: remove meshctl's programs, maps and devices from a node."""

from __future__ import annotations

from pathlib import Path

import typer

from meshctl.cli.main import app
from meshctl.cli.options import LockTimeoutOpt, lock_wait
from meshctl.cli.plan import RepoOpt


@app.command("uninstall")
def uninstall(
    node: str = typer.Option(..., "--node", help="The node to clean."),
    repo: RepoOpt = Path("."),
    auto_approve: bool = typer.Option(False, "--auto-approve", help="Do not ask."),
    lock_timeout: LockTimeoutOpt = "0s",
) -> None:
    """Detach and unpin every program and map meshctl made on NODE, remove its WireGuard device,
    routes and rules, and drop the node's record from the state. Its pods lose policy
    enforcement (and, on a node where meshctl gave them their endpoints, their connectivity)."""
    from meshctl.app.uninstall import uninstall_node
    from meshctl.app.workspace import open_workspace

    with lock_wait(lock_timeout):
        ws = open_workspace(repo)
        if not auto_approve and not typer.confirm(
                f"Remove meshctl from node {node} of {ws.cluster}?", default=False, err=True):
            print("Uninstall cancelled.")
            raise typer.Exit(1)
        print(uninstall_node(ws, node).summary())
