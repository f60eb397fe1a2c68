"""`meshctl observe`: query and follow the flow store with hubble-observe filters."""

from __future__ import annotations

import sys
from enum import StrEnum
from pathlib import Path
from typing import TYPE_CHECKING, Annotated

import typer

from meshctl.cli.main import app
from meshctl.errors import MeshctlError

if TYPE_CHECKING:
    pass


class FlowOutput(StrEnum):
    """Hubble's output names."""

    compact = "compact"
    json = "json"
    table = "table"
    dict = "dict"


# Flag -> FlowFilter field for every filter that `--not` can negate (short flags map to long ones).
NEGATABLE = {
    "--namespace": "namespaces", "-n": "namespaces", "--from-namespace": "from_namespaces",
    "--to-namespace": "to_namespaces", "--pod": "pods", "--from-pod": "from_pods", "--to-pod": "to_pods",
    "--ip": "ips", "--from-ip": "from_ips", "--to-ip": "to_ips",
    "--from-label": "from_labels", "--to-label": "to_labels",
    "--from-identity": "from_identities", "--to-identity": "to_identities",
    "--verdict": "verdicts", "--protocol": "protocols", "--port": "ports", "--to-port": "to_ports",
    "--http-method": "http_methods", "--http-path": "http_paths", "--http-status": "http_statuses",
    "--fqdn": "fqdns", "--from-fqdn": "from_fqdns", "--to-fqdn": "to_fqdns",
}
EXCLUDE = "--exclude-filter"  # hidden: what `--not FLAG VALUE` becomes before click parses


def expand_not(args: list[str]) -> list[str]:
    """`--not --from-pod X` -> `--exclude-filter --from-pod=X`: click cannot see flag order."""
    out: list[str] = []
    i = 0
    while i < len(args):
        if args[i] == "--":
            return out + args[i:]
        if args[i] != "--not":
            out.append(args[i])
            i += 1
            continue
        nxt = args[i + 1] if i + 1 < len(args) else ""
        flag, eq, value = nxt.partition("=")
        if flag not in NEGATABLE:
            raise MeshctlError(f"--not must be followed by a filter flag ({', '.join(sorted(NEGATABLE))}), "
                               f"not {nxt or 'nothing'!r}")
        if not eq:
            if i + 2 >= len(args):
                raise MeshctlError(f"--not {flag}: missing value")
            value = args[i + 2]
        out += [EXCLUDE, f"{flag}={value}"]
        i += 2 if eq else 3
    return out


NamespaceOpt = Annotated[list[str] | None, typer.Option(
    "--namespace", "-n", help="Source or destination namespace.")]
FromNamespaceOpt = Annotated[list[str] | None, typer.Option("--from-namespace", help="Source namespace.")]
ToNamespaceOpt = Annotated[list[str] | None, typer.Option("--to-namespace", help="Destination namespace.")]
PodOpt = Annotated[list[str] | None, typer.Option(
    "--pod", help="Source or destination pod, by prefix: ns/name-prefix, ns/ or name-prefix.")]
FromPodOpt = Annotated[list[str] | None, typer.Option("--from-pod", help="Source pod (a prefix, as --pod).")]
ToPodOpt = Annotated[list[str] | None, typer.Option("--to-pod", help="Destination pod (a prefix, as --pod).")]
IpOpt = Annotated[list[str] | None, typer.Option("--ip", help="Source or destination IPv4 address or CIDR.")]
FromIpOpt = Annotated[list[str] | None, typer.Option("--from-ip", help="Source IPv4 address or CIDR.")]
ToIpOpt = Annotated[list[str] | None, typer.Option("--to-ip", help="Destination IPv4 address or CIDR.")]
FromLabelOpt = Annotated[list[str] | None, typer.Option(
    "--from-label", help="Source label (key=value or k8s:key=value).")]
ToLabelOpt = Annotated[list[str] | None, typer.Option("--to-label", help="Destination label.")]
FromIdentityOpt = Annotated[list[str] | None, typer.Option(
    "--from-identity", help="Source numeric identity.")]
ToIdentityOpt = Annotated[list[str] | None, typer.Option(
    "--to-identity", help="Destination numeric identity.")]
VerdictOpt = Annotated[list[str] | None, typer.Option(
    "--verdict", help="FORWARDED, DROPPED or AUDIT (what staged policies would decide otherwise).")]
ProtocolOpt = Annotated[list[str] | None, typer.Option(
    "--protocol", help="tcp, udp, icmp; http or dns (the proxies' request and response records).")]
FqdnOpt = Annotated[list[str] | None, typer.Option(
    "--fqdn", help="A DNS name of either end, or asked by a DNS record ('*' within a label: *.stripe.com).")]
FromFqdnOpt = Annotated[list[str] | None, typer.Option("--from-fqdn", help="A DNS name of the source.")]
ToFqdnOpt = Annotated[list[str] | None, typer.Option(
    "--to-fqdn", help="A DNS name of the destination, or asked by a DNS record.")]
HttpMethodOpt = Annotated[list[str] | None, typer.Option("--http-method", help="HTTP method (GET, POST).")]
HttpPathOpt = Annotated[list[str] | None, typer.Option(
    "--http-path", help="A regular expression found in the request's path (e.g. '/users/[0-9]+').")]
HttpStatusOpt = Annotated[list[str] | None, typer.Option(
    "--http-status", help="A response status code or prefix: 403, 4+, 50+.")]
PortOpt = Annotated[list[str] | None, typer.Option("--port", help="Source or destination port.")]
ToPortOpt = Annotated[list[str] | None, typer.Option("--to-port", help="Destination port.")]
NodeOpt = Annotated[list[str] | None, typer.Option("--node", help="Only flows seen by this node.")]
NotOpt = Annotated[bool, typer.Option(
    "--not", help="Negate the filter flag that follows: `--not --to-pod demo/api` leaves those flows out.")]
ExcludeOpt = Annotated[list[str] | None, typer.Option(EXCLUDE, hidden=True)]
SinceOpt = Annotated[str | None, typer.Option(
    "--since", help="Flows since a duration ago (5m) or a time (RFC3339).")]
UntilOpt = Annotated[str | None, typer.Option("--until", help="Flows until a duration ago or a time.")]
LastOpt = Annotated[str | None, typer.Option(
    "--last", metavar="N", help="Only the newest N flows (default 20 without --since, --first or -f).")]
FirstOpt = Annotated[str | None, typer.Option("--first", metavar="N", help="Only the oldest N flows.")]
FollowOpt = Annotated[bool, typer.Option("--follow", "-f", help="Keep printing flows as they happen.")]
OutOpt = Annotated[FlowOutput, typer.Option("-o", "--output", help="json is one object per line.")]
RepoOpt = Annotated[Path, typer.Option("-C", "--repo", help="Desired-state repo (finds the state dir).")]
StateOpt = Annotated[Path | None, typer.Option(
    "--state-dir", help="State dir holding flows/ (default: from the repo).")]


@app.command("observe")
def observe(  # one parameter per hubble-observe flag
    repo: RepoOpt = Path("."), state_dir: StateOpt = None,
    namespace: NamespaceOpt = None,
    from_namespace: FromNamespaceOpt = None,
    to_namespace: ToNamespaceOpt = None,
    pod: PodOpt = None,
    from_pod: FromPodOpt = None,
    to_pod: ToPodOpt = None,
    ip: IpOpt = None,
    from_ip: FromIpOpt = None,
    to_ip: ToIpOpt = None,
    from_label: FromLabelOpt = None,
    to_label: ToLabelOpt = None,
    from_identity: FromIdentityOpt = None,
    to_identity: ToIdentityOpt = None,
    verdict: VerdictOpt = None,
    protocol: ProtocolOpt = None,
    port: PortOpt = None,
    to_port: ToPortOpt = None,
    http_method: HttpMethodOpt = None,
    http_path: HttpPathOpt = None,
    http_status: HttpStatusOpt = None,
    fqdn: FqdnOpt = None,
    from_fqdn: FromFqdnOpt = None,
    to_fqdn: ToFqdnOpt = None,
    negate: NotOpt = False, excluded: ExcludeOpt = None, node: NodeOpt = None,
    since: SinceOpt = None, until: UntilOpt = None, last: LastOpt = None, first: FirstOpt = None,
    follow: FollowOpt = False, output: OutOpt = FlowOutput.compact,
) -> None:
    """Show stored flows (oldest first); with --follow, keep printing new ones."""
    from meshctl.flows.filters import build_filter, parse_int
    from meshctl.flows.render import render_one, table
    from meshctl.flows.store import follow as follow_flows
    from meshctl.flows.store import open_stores, query_all

    if state_dir is None:
        from meshctl.flows.context import repo_info

        state_dir = repo_info(repo).state_dir
    given: dict[str, list[str] | None] = {
        "namespaces": namespace, "from_namespaces": from_namespace, "to_namespaces": to_namespace,
        "pods": pod, "from_pods": from_pod, "to_pods": to_pod, "ips": ip, "from_ips": from_ip,
        "to_ips": to_ip, "from_labels": from_label, "to_labels": to_label,
        "from_identities": from_identity, "to_identities": to_identity, "verdicts": verdict,
        "protocols": protocol, "ports": port, "to_ports": to_port,
        "http_methods": http_method, "http_paths": http_path, "http_statuses": http_status,
        "fqdns": fqdn, "from_fqdns": from_fqdn, "to_fqdns": to_fqdn,
    }
    denied: dict[str, list[str]] = {}
    for item in excluded or ():
        flag, _, value = item.partition("=")
        denied.setdefault(NEGATABLE[flag], []).append(value)
    flt = build_filter(given, since, until, build_filter(denied, None, None) if denied else None)
    if last is not None and first is not None:
        raise MeshctlError("--first and --last: give one of them")
    if first is not None and follow:
        raise MeshctlError("--first and --follow: --first reads stored flows only")
    many = "a count of flows (1 or more)"
    count = parse_int(last, "--last", 1, 2**31, many) if last is not None else None
    head = parse_int(first, "--first", 1, 2**31, many) if first is not None else None
    if count is None and head is None and since is None and not follow:
        count = 20
    stores = open_stores(state_dir, node or [])
    try:
        flows = [] if follow and count is None else query_all(stores, flt, count, head)
        if output is FlowOutput.table and not follow:
            print(table(flows))
            return
        for f in flows:
            print(render_one(f, output.value))
        if follow:
            sys.stdout.flush()
            for f in follow_flows(stores, flt):
                print(render_one(f, output.value), flush=True)
    finally:
        for s in stores:
            s.close()
