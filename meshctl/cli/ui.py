"""`meshctl ui`: the service map of the flows, and the picture of a plan, in a browser."""

from __future__ import annotations

import webbrowser
from pathlib import Path
from typing import Annotated

import typer

from meshctl.cli.main import app
from meshctl.errors import MeshctlError


@app.command("ui")
def ui(
    repo: Annotated[Path, typer.Option("-C", "--repo", help="Desired-state repo.")] = Path("."),
    port: Annotated[int, typer.Option("--port", help="Port on 127.0.0.1 (0: any free port).")] = 12000,
    open_browser: Annotated[bool, typer.Option("--open", help="Open the page in a browser.")] = False,
    since: Annotated[str, typer.Option("--since", help="Flows of this window first (5m, 1h, 24h).")] = "15m",
    plan_file: Annotated[Path | None, typer.Option(
        "--plan", metavar="PLANFILE", help="Draw the connections this saved plan changes.")] = None,
    base: Annotated[str | None, typer.Option("--base", help="Draw what base..head changes (git).")] = None,
    head: Annotated[str | None, typer.Option("--head", help="Head revision (default: working tree).")] = None,
) -> None:
    """Serve the service map on localhost: workloads, flows coloured by verdict, live updates, the
    rule behind every edge; with --plan or --base/--head, the connections a change stops or starts."""
    from meshctl.cli.policy import load_for_trace
    from meshctl.compile.trace import Tracer
    from meshctl.flows.context import repo_info
    from meshctl.flows.filters import parse_duration
    from meshctl.ui import plan as plan_view
    from meshctl.ui.locate import locator
    from meshctl.ui.server import UiApp, UiSettings, check_assets, serve

    if not 0 <= port <= 65535:
        raise MeshctlError(f"--port {port}: not a port (0-65535)")
    if plan_file is not None and base is not None:
        raise MeshctlError("give either --plan or --base/--head, not both")
    if head is not None and base is None:
        raise MeshctlError("--head needs --base")
    parse_duration(since, "--since")
    check_assets()
    info = repo_info(repo)
    changes = None
    if plan_file is not None:
        changes = plan_view.from_plan_file(plan_file)
    elif base is not None:
        changes = plan_view.from_revisions(repo, base, head)
    compiled = load_for_trace(repo, None, None)  # the rules' file:line, and `trace this`
    tracer = Tracer(compiled)

    def trace(src: str, dst: str, dport: int, protocol: str) -> str:
        from meshctl.compile.trace import parse_port

        p, proto = parse_port(f"{dport}/{protocol}")
        return tracer.trace(src, dst, p, proto).text()

    settings = UiSettings(info.state_dir, info.cluster, since, trace, changes, locator(compiled))

    def ready(url: str) -> None:
        typer.echo(f"meshctl ui: {info.cluster} on {url} (Ctrl-C stops)", err=False)
        if open_browser:
            webbrowser.open(url)

    try:
        serve(UiApp(settings), port, ready)
    except OSError as err:
        raise MeshctlError(f"--port {port}: {err.strerror}") from None
    except KeyboardInterrupt:
        pass
