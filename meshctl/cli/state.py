"""`meshctl state show|unlock`: inspect the state backend, release a lock left behind."""

from __future__ import annotations

import json
import sys
from pathlib import Path
from typing import Annotated

import typer

from meshctl.cli.main import app
from meshctl.cli.options import TextOrJson
from meshctl.state import load_state, read_lock, unlock

state_app = typer.Typer(help="Inspect the state (serial, lineage, last apply) and manage its lock.",
                        no_args_is_help=True)
app.add_typer(state_app, name="state")

StateDir = Annotated[
    Path | None, typer.Option("--state-dir", help="The state directory (default: the repo's [state] dir).")
]
RepoOpt = Annotated[Path, typer.Option("-C", "--repo", help="Desired-state repo (with meshctl.toml).")]


def _state_dir(repo: Path, state_dir: Path | None) -> Path:
    """--state-dir wins; else the state dir that the repo's meshctl.toml names."""
    if state_dir is not None:
        return state_dir
    from meshctl.source.config import CONFIG_FILE, parse_config

    config = repo / CONFIG_FILE
    if not config.is_file():
        return repo / "state"
    return parse_config(config.read_text(), repo).state_dir


@state_app.command("show")
def show(
    repo: RepoOpt = Path("."),
    state_dir: StateDir = None,
    output: Annotated[TextOrJson, typer.Option("-o", "--output", help="text or json.")] = TextOrJson.text,
) -> None:
    """Lineage, serial, last applied plan and per-node fingerprints; the lock if held."""
    state_dir = _state_dir(repo, state_dir)
    state = load_state(state_dir)
    lock = read_lock(state_dir)
    if output is TextOrJson.json:
        doc = {
            "lineage": state.lineage, "serial": state.serial, "last_plan_id": state.last_plan_id,
            "last_applied_at": state.last_applied_at,
            "nodes": {
                n: {"fingerprint": r.fingerprint, "applied_at": r.applied_at} for n, r in state.nodes.items()
            },
            "lock": lock.__dict__ if lock else None,
        }
        sys.stdout.write(json.dumps(doc, indent=2, sort_keys=True) + "\n")
        return
    if state.lineage is None:
        print(f"No state in {state_dir} yet (nothing applied).")
    else:
        print(f"lineage {state.lineage}  serial {state.serial}")
        print(f"last applied plan {state.last_plan_id or '-'} at {state.last_applied_at or '-'}")
        for name, rec in sorted(state.nodes.items()):
            print(f"  {name}: {rec.fingerprint} (applied {rec.applied_at})")
    if lock is not None:
        print(f"locked: {lock.describe()}")


@state_app.command("unlock")
def unlock_cmd(
    lock_id: Annotated[str, typer.Argument(help="The id printed in the lock error.")],
    repo: RepoOpt = Path("."),
    state_dir: StateDir = None,
) -> None:
    """Release a state lock whose holder is gone (check first that no apply is running)."""
    state_dir = _state_dir(repo, state_dir)
    held = unlock(state_dir, lock_id)
    print(f"Released lock {held.id} ({held.operation} by {held.owner} pid {held.pid}).")
