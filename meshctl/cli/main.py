"""The meshctl command: composes one typer app from one module per command.

Expected errors (MeshctlError) print one line to stderr and exit 1; anything else is a bug: its
traceback goes to a debug file (never with locals, they may hold secrets) and the user gets one
line pointing at it.
"""

from __future__ import annotations

import gc
import sys
import tempfile
import traceback
from pathlib import Path
from typing import Annotated, Any

import typer

from meshctl.errors import MeshctlError

app = typer.Typer(
    name="meshctl",
    help="GitOps for an eBPF network datapath: plan and apply network policy on live nodes.",
    no_args_is_help=True,
    pretty_exceptions_enable=False,
    add_completion=True,
    rich_markup_mode=None,  # help is plain text: rich markup would eat `[state]` and print `<bool>`
)


def version() -> str:
    from importlib import metadata  # 25 ms of imports: only for --version

    try:
        return metadata.version("meshctl")
    except metadata.PackageNotFoundError:
        return "unknown"


def _show_version(value: bool) -> None:
    if value:
        print(f"meshctl {version()}")
        raise typer.Exit(0)


@app.callback()
def root(
    ctx: typer.Context,
    repo: Annotated[
        Path | None,
        typer.Option("-C", "--repo", help="Desired-state repo for the command that follows (as `git -C`).",
                     metavar="REPO"),
    ] = None,
    show_version: Annotated[
        bool, typer.Option("--version", help="Print the version and exit.", is_eager=True,
                           callback=_show_version)
    ] = False,
) -> None:
    """GitOps for an eBPF network datapath: plan and apply network policy on live nodes."""
    if repo is not None:  # `meshctl -C REPO plan`: the default of every command's own -C
        ctx.default_map = repo_defaults(ctx.command, str(repo))


def repo_defaults(command: Any, repo: str) -> dict[str, Any]:
    """A click default_map giving every (sub)command that has a `repo` parameter this repo."""
    out: dict[str, Any] = {}
    for name, sub in getattr(command, "commands", {}).items():
        if getattr(sub, "commands", None):
            out[name] = repo_defaults(sub, repo)
        elif any(p.name == "repo" for p in sub.params):
            out[name] = {"repo": repo}
    return out


# Each command module registers itself on `app` (one file per command, see cli/*.py).
from meshctl.cli import commands  # noqa: E402,F401


def build_command() -> Any:
    """The click command of `app` with plain help everywhere (sub-apps included)."""
    from typer.main import get_command

    cmd = get_command(app)

    def plain(c: Any) -> None:
        c.rich_markup_mode = None
        for param in c.params:
            if _needs_metavar(param):  # `--from-pod POD`, not typer's `<list[str]>`
                param.metavar = param.name.rpartition("_")[2].upper()
            elif getattr(param, "param_type_name", "") == "argument":
                param.metavar = param.metavar or param.name.upper()
                param.display_type_rich = lambda ctx: ""  # `PLAN_FILE`, not `PLAN_FILE <path>`
        for sub in getattr(c, "commands", {}).values():
            plain(sub)

    plain(cmd)
    return cmd


def _needs_metavar(param: Any) -> bool:
    return (getattr(param, "param_type_name", "") == "option" and not getattr(param, "is_flag", False)
            and param.metavar is None
            and not getattr(getattr(param, "type_descriptor", None), "is_choice", False))


def rewrite_argv(args: list[str]) -> list[str]:
    """Order-dependent flags click cannot parse by itself (`observe --not FLAG VALUE`)."""
    from meshctl.cli.observe import expand_not

    i = 0
    while i < len(args) and args[i].startswith("-"):  # the root's options: -C REPO, --version
        i += 2 if args[i] in ("-C", "--repo") else 1
    if i < len(args) and args[i] == "observe":
        return args[: i + 1] + expand_not(args[i + 1:])
    return args


def main(argv: list[str] | None = None) -> None:
    # standalone_mode=False: usage errors come back to us, so they exit 1 like every other bad
    # input (exit 2 means "changes present" with --detailed-exitcode).
    try:
        args = rewrite_argv(list(sys.argv[1:] if argv is None else argv))
        code = build_command().main(args, prog_name="meshctl", standalone_mode=False)
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
    if argv is None:  # the process ends here: spare the interpreter's last collections from
        gc.freeze()  # walking what is still alive (after a 10,000-pod plan, about 30 ms)
    sys.exit(code if isinstance(code, int) else 0)


def _usage_error(err: Exception) -> None:
    """One line and exit 1; a command group called without a command shows its help."""
    message = err.format_message() if hasattr(err, "format_message") else str(err)
    message = message.replace("Value error, ", "")  # typer's wording for a bad choice
    ctx = getattr(err, "ctx", None)
    if type(err).__name__ == "NoArgsIsHelpError":
        print(message)
        sys.exit(0)
    hint = f" (see `{ctx.command_path} --help`)" if ctx is not None else ""
    print(f"Error: {message}{hint}", file=sys.stderr)
    sys.exit(1)
