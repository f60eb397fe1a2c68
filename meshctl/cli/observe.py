"""`meshctl observe`: query and follow the flow store with hubble-observe filters."""

from __future__ import annotations

import sys
from pathlib import Path

import typer

from meshctl.cli.main import app
from meshctl.errors import MeshctlError

RepoOpt = typer.Option(Path("."), "-C", "--repo", help="Desired-state repo (finds the state dir).")
StateOpt = typer.Option(None, "--state-dir", help="State dir holding flows/ (default: from the repo).")
NsOpt = typer.Option([], "--namespace", "-n", help="Source or destination namespace.")
PodOpt = typer.Option([], "--pod", help="Source or destination pod ([namespace/]pod).")
FromPodOpt = typer.Option([], "--from-pod", help="Source pod ([namespace/]pod).")
ToPodOpt = typer.Option([], "--to-pod", help="Destination pod ([namespace/]pod).")
FromLabelOpt = typer.Option([], "--from-label", help="Source label (key=value or k8s:key=value).")
ToLabelOpt = typer.Option([], "--to-label", help="Destination label.")
FromIdOpt = typer.Option([], "--from-identity", help="Source numeric identity.")
ToIdOpt = typer.Option([], "--to-identity", help="Destination numeric identity.")
VerdictOpt = typer.Option([], "--verdict", help="FORWARDED or DROPPED.")
ProtoOpt = typer.Option([], "--protocol", help="tcp, udp or icmp.")
PortOpt = typer.Option([], "--port", help="Source or destination port.")
ToPortOpt = typer.Option([], "--to-port", help="Destination port.")
NodeOpt = typer.Option([], "--node", help="Only flows seen by this node.")
SinceOpt = typer.Option(None, "--since", help="Flows since a duration ago (5m) or a time (RFC3339).")
UntilOpt = typer.Option(None, "--until", help="Flows until a duration ago or a time.")
LastOpt = typer.Option(None, "--last", help="Only the newest N flows (default 20 without --since/--follow).")
FollowOpt = typer.Option(False, "--follow", "-f", help="Keep printing flows as they happen.")
OutOpt = typer.Option("compact", "-o", "--output", help="compact, json (one object per line), table, dict.")


@app.command("observe")
def observe(
    repo: Path = RepoOpt, state_dir: Path | None = StateOpt, namespace: list[str] = NsOpt,
    pod: list[str] = PodOpt, from_pod: list[str] = FromPodOpt, to_pod: list[str] = ToPodOpt,
    from_label: list[str] = FromLabelOpt, to_label: list[str] = ToLabelOpt,
    from_identity: list[int] = FromIdOpt, to_identity: list[int] = ToIdOpt, verdict: list[str] = VerdictOpt,
    protocol: list[str] = ProtoOpt,
    port: list[int] = PortOpt, to_port: list[int] = ToPortOpt, node: list[str] = NodeOpt,
    since: str | None = SinceOpt, until: str | None = UntilOpt, last: int | None = LastOpt,
    follow: bool = FollowOpt, output: str = OutOpt,
) -> None:
    """Show stored flows (newest last); with --follow, keep printing new ones."""
    from meshctl.flows.filters import FlowFilter, parse_time
    from meshctl.flows.render import FORMATS, render_one, table
    from meshctl.flows.store import follow as follow_flows
    from meshctl.flows.store import open_stores, query_all

    if output not in FORMATS:
        raise MeshctlError(f"-o {output}: choose one of {', '.join(FORMATS)}")
    if state_dir is None:
        from meshctl.flows.context import repo_info

        state_dir = repo_info(repo).state_dir
    flt = FlowFilter(
        namespaces=tuple(namespace), pods=tuple(pod), from_pods=tuple(from_pod), to_pods=tuple(to_pod),
        from_labels=tuple(from_label), to_labels=tuple(to_label), from_identities=tuple(from_identity),
        to_identities=tuple(to_identity), verdicts=tuple(verdict), protocols=tuple(protocol),
        ports=tuple(port), to_ports=tuple(to_port),
        since_ns=parse_time(since, "--since") if since else None,
        until_ns=parse_time(until, "--until") if until else None,
    )
    if last is None and since is None and not follow:
        last = 20
    stores = open_stores(state_dir, node)
    try:
        flows = [] if follow and last is None else query_all(stores, flt, last)
        if output == "table" and not follow:
            print(table(flows))
            return
        for f in flows:
            print(render_one(f, output))
        if follow:
            sys.stdout.flush()
            for f in follow_flows(stores, flt):
                print(render_one(f, output), flush=True)
    finally:
        for s in stores:
            s.close()
