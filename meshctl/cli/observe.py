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
    from_identity: list[str] = FromIdOpt, to_identity: list[str] = ToIdOpt, verdict: list[str] = VerdictOpt,
    protocol: list[str] = ProtoOpt,
    port: list[str] = PortOpt, to_port: list[str] = ToPortOpt, node: list[str] = NodeOpt,
    since: str | None = SinceOpt, until: str | None = UntilOpt, last: str | None = LastOpt,
    follow: bool = FollowOpt, output: str = OutOpt,
) -> None:
    """Show stored flows (newest last); with --follow, keep printing new ones."""
    from meshctl.flows.filters import FlowFilter, parse_int, parse_time
    from meshctl.flows.render import FORMATS, render_one, table
    from meshctl.flows.store import follow as follow_flows
    from meshctl.flows.store import open_stores, query_all

    if output not in FORMATS:
        raise MeshctlError(f"-o {output}: choose one of {', '.join(FORMATS)}")
    if state_dir is None:
        from meshctl.flows.context import repo_info

        state_dir = repo_info(repo).state_dir

    def ints(flag: str, values: list[str], high: int, what: str) -> tuple[int, ...]:
        return tuple(parse_int(v, flag, 0, high, what) for v in values)

    port_word, id_word = "a port number (0-65535)", "a numeric identity (0 to 2^32-1)"
    flt = FlowFilter(
        namespaces=tuple(namespace), pods=tuple(pod), from_pods=tuple(from_pod), to_pods=tuple(to_pod),
        from_labels=tuple(from_label), to_labels=tuple(to_label),
        from_identities=ints("--from-identity", from_identity, 2**32 - 1, id_word),
        to_identities=ints("--to-identity", to_identity, 2**32 - 1, id_word), verdicts=tuple(verdict),
        protocols=tuple(protocol), ports=ints("--port", port, 65535, port_word),
        to_ports=ints("--to-port", to_port, 65535, port_word),
        since_ns=parse_time(since, "--since") if since else None,
        until_ns=parse_time(until, "--until") if until else None,
    )
    count = parse_int(last, "--last", 1, 2**31, "a count of flows (1 or more)") if last is not None else None
    if count is None and since is None and not follow:
        count = 20
    stores = open_stores(state_dir, node)
    try:
        flows = [] if follow and count is None else query_all(stores, flt, count)
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
