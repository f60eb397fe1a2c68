"""`meshctl connectivity test`: the repo's ConnectivityChecks in the lab, confirmed by flows."""

from __future__ import annotations

from pathlib import Path

import typer

from meshctl.cli.main import app

conn_app = typer.Typer(help="Connectivity tests in the lab (like `cilium connectivity test`).",
                       no_args_is_help=True)
app.add_typer(conn_app, name="connectivity")

RepoOpt = typer.Option(Path("."), "-C", "--repo", help="Desired-state repo (with meshctl.toml).")
CheckOpt = typer.Option([], "--check", help="Run only this ConnectivityCheck (repeatable).")
FlowsOpt = typer.Option(True, "--flows/--no-flows", help="Confirm each connection in the flow store.")
TimeoutOpt = typer.Option(1.0, "--timeout", help="Seconds per connection attempt.")


@conn_app.command("test")
def test(repo: Path = RepoOpt, check: list[str] = CheckOpt, flows: bool = FlowsOpt,
         timeout: float = TimeoutOpt) -> None:
    """Run each check; exit 0 when all pass, 1 otherwise."""
    from meshctl.flows.connectivity import run_checks
    from meshctl.flows.render import compact

    results = run_checks(repo, tuple(check), confirm=flows, timeout=timeout)
    for r in results:
        mark = "PASS" if r.passed else "FAIL"
        got = "connected" if r.connected else "blocked"
        print(f"[{mark}] {r.name}: {r.src} -> {r.dst}:{r.port}/{r.protocol} ({r.locality}) "
              f"expect {r.expect}, {got}")
        if r.flow is not None:
            print(f"       flow: {compact(r.flow)}")
        if r.detail and not r.passed:
            print(f"       {r.detail}")
    passed = sum(r.passed for r in results)
    print(f"\n{passed}/{len(results)} checks passed, {len(results) - passed} failed")
    raise typer.Exit(0 if results and passed == len(results) else 1)
