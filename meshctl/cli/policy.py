"""`meshctl policy trace`: why a connection is forwarded or dropped."""

from __future__ import annotations

import json
import sys
from pathlib import Path
from typing import TYPE_CHECKING, Annotated

import typer

from meshctl.cli.main import app
from meshctl.cli.options import TextOrJson
from meshctl.errors import MeshctlError

if TYPE_CHECKING:
    from meshctl.source.desired import DesiredState

policy_app = typer.Typer(help="Inspect what the compiled policy does.", no_args_is_help=True)
app.add_typer(policy_app, name="policy")


def load_for_trace(repo: Path | None, ref: str | None, directory: Path | None):
    """Compile the desired repo with the state's identity numbers (fresh ones when no state).

    `--dir` may be plain Kubernetes YAML (a directory without meshctl.toml, a file, `-` for stdin):
    then an implicit one-node cluster, said once on stderr, and no state or lab is consulted.
    """
    from meshctl.compile import EndpointTable, IdentityTable, compile_cluster
    from meshctl.compile.trace import with_trace_ips
    from meshctl.source import load_desired
    from meshctl.source.config import CONFIG_FILE
    from meshctl.state import load_state

    if repo is not None and directory is not None:
        raise MeshctlError("give either -C REPO or --dir DIR, not both")
    if directory is not None and (str(directory) == "-" or not (directory / CONFIG_FILE).is_file()):
        desired = _load_plain(directory)
        return compile_cluster(with_trace_ips(desired), IdentityTable(), EndpointTable(), "trace")
    root = directory or repo or Path(".")
    from meshctl.backend.lab import lab_pod_ips as pod_ips

    desired = load_desired(root, ref if directory is None else None)
    desired = with_trace_ips(desired, pod_ips(desired.config.cluster))
    state = load_state(desired.config.state_dir)  # read only: no lock, nothing allocated is saved
    identities = (
        IdentityTable.from_dict(state.identities) if state.identities else IdentityTable()
    )
    endpoints = (
        EndpointTable.from_dict(state.endpoint_ids) if state.endpoint_ids else EndpointTable()
    )
    return compile_cluster(desired, identities, endpoints, "trace")


def _load_plain(directory: Path) -> DesiredState:
    """Kubernetes YAML from a directory without meshctl.toml, or from stdin for `-`."""
    from meshctl.source.plain import load_plain_dir, load_plain_file, load_plain_text

    if str(directory) == "-":
        if sys.stdin.isatty():
            raise MeshctlError("--dir -: stdin is a terminal; pipe `kubectl get ns,pods,netpol,cnp,ccnp -A "
                               "-o yaml` into meshctl")
        plain = load_plain_text(sys.stdin.read(), "<stdin>")
    elif directory.is_file():
        plain = load_plain_file(directory)
    else:
        plain = load_plain_dir(directory)
    print(f"note: {plain.note}", file=sys.stderr)
    return plain.desired


@policy_app.command("trace")
def trace_cmd(
    src: Annotated[str | None, typer.Option("--from", help="NS/POD or IPv4 address")] = None,
    dst: Annotated[str | None, typer.Option("--to", help="NS/POD or IPv4 address")] = None,
    port: Annotated[str | None, typer.Option("--port", help="N or N/PROTO (tcp, udp, sctp)")] = None,
    repo: Annotated[Path | None, typer.Option("-C", "--repo", help="desired-state repository")] = None,
    ref: Annotated[str | None, typer.Option("--ref", help="git revision of the repository")] = None,
    directory: Annotated[Path | None, typer.Option(
        "--dir", metavar="DIR",
        help="desired-state directory, or plain Kubernetes YAML (`kubectl get ... -o yaml`) "
             "without meshctl.toml: a directory, a file, or - for stdin")] = None,
    batch: Annotated[
        Path | None, typer.Option("--batch", metavar="FILE", help="JSONL queries {src,dst,port,protocol}")
    ] = None,
    http: Annotated[str | None, typer.Option(
        "--http", metavar="'METHOD /PATH'", help="An HTTP request: the L7 proxy's verdict on it too")] = None,
    header: Annotated[list[str] | None, typer.Option(
        "--header", metavar="'NAME: VALUE'",
        help="A header of the --http request (repeat it; Host sets the host)")] = None,
    output: Annotated[TextOrJson, typer.Option("-o", "--output", help="text or json.")] = TextOrJson.text,
) -> None:
    """Verdict at the source (egress) and destination (ingress), and the rules behind it."""
    from meshctl.compile.trace import Tracer, parse_port
    from meshctl.httpverdicts import HttpRequest

    if header and not http:
        raise MeshctlError("--header needs --http 'METHOD /PATH'")
    request = HttpRequest.parse(http, header or ()) if http else None

    compiled = load_for_trace(repo, ref, directory)
    tracer = Tracer(compiled)
    if batch is not None:
        try:
            lines = batch.read_text().splitlines()
        except OSError as err:
            raise MeshctlError(f"cannot read {batch}: {err.strerror}") from err
        out = sys.stdout
        for n, line in enumerate(lines, 1):
            if not line.strip():
                continue
            try:
                q = json.loads(line)
                p, proto = parse_port(f"{q['port']}/{q.get('protocol', 'TCP')}")
                src_q, dst_q = str(q["src"]), str(q["dst"])
            except (ValueError, KeyError, TypeError) as err:
                raise MeshctlError(f"{batch}:{n}: bad query: {err}") from err
            t = tracer.trace(src_q, dst_q, p, proto)
            out.write(json.dumps(t.as_dict(), sort_keys=True) + "\n")
        return
    if not (src and dst and port):
        raise MeshctlError("policy trace needs --from, --to and --port (or --batch FILE)")
    p, proto = parse_port(port)
    t = tracer.trace(src, dst, p, proto, request)
    if output is TextOrJson.json:
        typer.echo(json.dumps(t.as_dict(), indent=2, sort_keys=True))
    else:
        typer.echo(t.text())
