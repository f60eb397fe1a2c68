"""`meshctl recover`: bring every node of an interrupted apply back to a consistent state."""

from __future__ import annotations

from pathlib import Path

from meshctl.cli.apply import progress_printer
from meshctl.cli.main import app
from meshctl.cli.options import LockTimeoutOpt, lock_wait
from meshctl.cli.plan import RepoOpt


@app.command("recover")
def recover(repo: RepoOpt = Path("."), lock_timeout: LockTimeoutOpt = "0s") -> None:
    """Finish an apply that was killed: revert half-applied nodes to their journalled before-state.
    While the apply still runs (its process holds the lock), recover says so and does nothing."""
    from meshctl.app.recover import recover as run_recover
    from meshctl.app.workspace import open_workspace

    with lock_wait(lock_timeout):
        ws = open_workspace(repo)
        result = run_recover(ws, on_event=progress_printer())  # type: ignore[arg-type]
    print(result.summary())
