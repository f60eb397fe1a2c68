"""The meshctl command: composes one typer app from one module per command.

Expected errors (MeshctlError) print one line to stderr and exit 1; anything else is a bug: its
traceback goes to a debug file (never with locals, they may hold secrets) and the user gets one
line pointing at it.
"""

from __future__ import annotations

import sys
import tempfile
import traceback

import typer

from meshctl.errors import MeshctlError

app = typer.Typer(
    name="meshctl",
    help="GitOps for an eBPF network datapath: plan and apply network policy on live nodes.",
    no_args_is_help=True,
    pretty_exceptions_enable=False,
    add_completion=False,
)

# Each command module registers itself on `app` (one file per command, see cli/*.py).
from meshctl.cli import commands  # noqa: E402,F401


def main() -> None:
    # standalone_mode=False: usage errors come back to us, so they exit 1 like every other bad
    # input (exit 2 means "changes present" with --detailed-exitcode).
    from typer.main import get_command

    try:
        code = get_command(app).main(prog_name="meshctl", standalone_mode=False)
    except MeshctlError as err:
        print(f"Error: {err}", file=sys.stderr)
        sys.exit(1)
    except typer.TyperException as err:  # the usage errors of typer's click
        _usage_error(err)
    except typer.Abort:
        print("Aborted.", file=sys.stderr)
        sys.exit(1)
    except (KeyboardInterrupt, BrokenPipeError):
        sys.exit(130)
    except SystemExit:
        raise
    except Exception:
        with tempfile.NamedTemporaryFile("w", prefix="meshctl-bug-", suffix=".log", delete=False) as f:
            traceback.print_exc(file=f)
        exc = sys.exc_info()[1]
        print(f"Error: internal error ({type(exc).__name__}: {exc}); this is a bug, details in {f.name}",
              file=sys.stderr)
        sys.exit(1)
    sys.exit(code if isinstance(code, int) else 0)


def _usage_error(err: Exception) -> None:
    """One line and exit 1; a command group called without a command shows its help."""
    message = err.format_message() if hasattr(err, "format_message") else str(err)
    ctx = getattr(err, "ctx", None)
    if type(err).__name__ == "NoArgsIsHelpError":
        print(message)
        sys.exit(0)
    hint = f" (see `{ctx.command_path} --help`)" if ctx is not None else ""
    print(f"Error: {message}{hint}", file=sys.stderr)
    sys.exit(1)
