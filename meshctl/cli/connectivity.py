"""`meshctl connectivity test`: repo checks plus generated ones in the lab, confirmed by flows."""

from __future__ import annotations

import json
from pathlib import Path

import typer

from meshctl.cli.main import app
from meshctl.cli.options import TextOrJson

conn_app = typer.Typer(help="Connectivity tests in the lab (like `cilium connectivity test`).",
                       no_args_is_help=True)
app.add_typer(conn_app, name="connectivity")

RepoOpt = typer.Option(Path("."), "-C", "--repo", help="Desired-state repo (with meshctl.toml).")
CheckOpt = typer.Option([], "--check", help="Only this ConnectivityCheck (repeatable; skips generated ones).")
GenOpt = typer.Option(True, "--generated/--no-generated",
                      help="Also run generated pod-to-pod and pod-to-service checks.")
FlowsOpt = typer.Option(True, "--flows/--no-flows", help="Confirm each connection in the flow store.")
TimeoutOpt = typer.Option(1.0, "--timeout", help="Seconds per connection attempt.")
OutOpt = typer.Option(TextOrJson.text, "-o", "--output", help="text or json.")


@conn_app.command("test")
def test(repo: Path = RepoOpt, check: list[str] = CheckOpt, generated: bool = GenOpt, flows: bool = FlowsOpt,
         timeout: float = TimeoutOpt, output: TextOrJson = OutOpt) -> None:
    """Run each check; exit 0 when all pass, 1 otherwise."""
    from meshctl.app.connectivity import run_checks
    from meshctl.app.connectivity_report import summary_table, to_json
    from meshctl.errors import MeshctlError
    from meshctl.flows.render import compact

    if timeout <= 0:
        raise MeshctlError(f"--timeout {timeout}: must be more than 0 seconds")
    report = run_checks(repo, tuple(check), confirm=flows, timeout=timeout, generated=generated)
    if output is TextOrJson.json:
        print(json.dumps(to_json(report), indent=2, sort_keys=True))
        raise typer.Exit(0 if report.ok else 1)
    for r in report.results:
        mark = "PASS" if r.passed else "FAIL"
        got = "connected" if r.connected else "blocked"
        print(f"[{mark}] {r.name}: {r.src} -> {r.dst}:{r.port}/{r.protocol} ({r.locality}) "
              f"expect {r.expect}, {got}")
        if r.flow is not None:
            print(f"       flow: {compact(r.flow)}")
        if r.detail and not r.passed:
            print(f"       {r.detail}")
    for note in report.notes:
        print(f"note: {note}")
    print()
    print(summary_table(report))
    failed = len(report.results) - report.passed
    print(f"\n{report.passed}/{len(report.results)} checks passed, {failed} failed")
    raise typer.Exit(0 if report.ok else 1)
