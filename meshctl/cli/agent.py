"""`meshctl agent --node NODE`: consume a node's flow events into the flow store, serve metrics."""

from __future__ import annotations

import logging
import ssl
import sys
from pathlib import Path

import typer

from meshctl.cli.main import app
from meshctl.errors import MeshctlError

NodeOpt = typer.Option(..., "--node", help="Node whose ringbuf to consume.")
RepoOpt = typer.Option(Path("."), "-C", "--repo", help="Desired-state repo (names for flows).")
ClusterOpt = typer.Option(None, "--cluster", help="Cluster (default: cluster.name of the repo).")
StoreOpt = typer.Option(None, "--store", help="SQLite file (default: <state>/flows/<node>.db).")
AddrOpt = typer.Option(None, "--metrics-address", help="Bind address for /metrics.")
PortOpt = typer.Option(None, "--metrics-port", help="Port for /metrics (0 = off).")
ApiOpt = typer.Option(True, "--api/--no-api", help="Serve the node API (observe/apply/revert/verify) "
                      "on a unix socket for remote applies.")
ApiSocketOpt = typer.Option(None, "--api-socket", help="Socket path (default: "
                            "$MESHCTL_AGENT_SOCKET_DIR or /run/meshctl, then agent-<cluster>-<node>.sock).")
ListenOpt = typer.Option(None, "--listen", metavar="ADDRESS:PORT", help="Serve the node API over TCP "
                         "with mutual TLS (instead of the unix socket).")
TlsCaOpt = typer.Option(None, "--tls-ca", help="CA that signed the clients' certificates "
                        "($MESHCTL_AGENT_CA).")
TlsCertOpt = typer.Option(None, "--tls-cert", help="This agent's certificate, naming the node "
                          "($MESHCTL_AGENT_CERT).")
TlsKeyOpt = typer.Option(None, "--tls-key", help="Its private key ($MESHCTL_AGENT_KEY).")
InsecureOpt = typer.Option(False, "--insecure", help="Plain TCP with --listen: for a lab only.")


@app.command("agent")
def agent(node: str = NodeOpt, repo: Path = RepoOpt, cluster: str | None = ClusterOpt,
          store: Path | None = StoreOpt, metrics_address: str | None = AddrOpt,
          metrics_port: int | None = PortOpt, api: bool = ApiOpt,
          api_socket: Path | None = ApiSocketOpt, listen: str | None = ListenOpt,
          tls_ca: Path | None = TlsCaOpt, tls_cert: Path | None = TlsCertOpt,
          tls_key: Path | None = TlsKeyOpt, insecure: bool = InsecureOpt) -> None:
    """Run the flow agent of one node in the foreground (stop with SIGTERM or Ctrl-C)."""
    from meshctl.flows.agent import Agent, AgentSettings
    from meshctl.flows.context import change_token, repo_info, try_load_context
    from meshctl.flows.enrich import EnrichContext
    from meshctl.flows.filters import parse_duration
    from meshctl.flows.store import store_path

    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(message)s", stream=sys.stderr)
    where, tls = _api_address(listen, tls_ca, tls_cert, tls_key, insecure) if api else (None, None)
    has_repo = (repo / "meshctl.toml").exists()
    journal_dir: Path | None = None  # the API's node journal: <state>/agents/<node> with a repo
    if not has_repo:
        if cluster is None or store is None:
            raise MeshctlError(f"{repo}/meshctl.toml not found: pass -C REPO (or --cluster and --store)")
        bare = AgentSettings(cluster=cluster, node=node, store=store,
                             metrics_address=metrics_address or "127.0.0.1", metrics_port=metrics_port or 0)
        runner = Agent(bare, lambda prev: prev or EnrichContext(node=node))
    else:
        info = repo_info(repo)
        if node not in info.nodes:
            raise MeshctlError(f"--node {node}: not a node of {info.cluster} ({', '.join(info.nodes)})")
        settings = AgentSettings(
            cluster=cluster or info.cluster, node=node, store=store or store_path(info.state_dir, node),
            max_age_s=parse_duration(info.retention, "observability.flowRetention"), max_rows=info.max_rows,
            metrics_address=metrics_address or info.metrics_address,
            metrics_port=info.metrics_port(node) if metrics_port is None else metrics_port,
            state_dir=info.state_dir,
        )
        from meshctl.lab.registry import pod_ips, registry_path  # a lab node: pod IPs from the lab

        name = info.cluster
        runner = Agent(settings, lambda prev: try_load_context(info, node, prev, lambda: pod_ips(name)),
                       lambda: change_token(info, [registry_path(name)]))
        from meshctl.agentapi.endpoints import agent_dir

        journal_dir = agent_dir(info.state_dir, node)
    runner.install_signal_handlers()
    api_thread = None
    if api:
        from meshctl.agentapi.protocol import socket_path
        from meshctl.agentapi.run import start_api
        from meshctl.lab.agentservice import lab_endpoint_sync, lab_service, node_netns

        sock = api_socket or socket_path(runner.s.cluster, node)
        journal_dir = journal_dir or sock.parent / f"journal-{runner.s.cluster}-{node}"
        netns = node_netns(runner.s.cluster, node)
        service = lab_service(runner.s.cluster, node, netns, journal_dir, runner.s.store)
        api_thread = start_api(service, where or sock, runner.stop, tls)
        from meshctl.proxy.supervisor import start_supervisor  # the node's Envoy, once it has rules

        start_supervisor(runner.s.cluster, node, netns, runner.stop)
        service.watch_sessions(runner.stop)  # a silent apply session: this agent reverts its node
        source = info.inventory.source if has_repo else "repo"
        if source == "lab":  # follow the lab's pods between applies
            lab_endpoint_sync(service, runner.s.cluster, info.state_dir).start(runner.stop)
        elif source == "kubernetes":  # follow the API server's pods: watch, CiliumIdentity objects
            from meshctl.agentapi.kubeinventory import kube_endpoint_sync

            kube_endpoint_sync(service, runner.s.cluster, info.inventory, info.root, runner.stop)
    runner.run()
    if api_thread is not None:
        runner.stop.set()
        api_thread.join(5)


def _api_address(listen: str | None, ca: Path | None, cert: Path | None, key: Path | None,
                 insecure: bool) -> tuple[tuple[str, int] | None, ssl.SSLContext | None]:
    """(--listen address, its server TLS context); (None, None) for the unix socket. Plain TCP
    only with --insecure; a CA, certificate or key that cannot be used stops the agent here."""
    from meshctl.agentapi.tls import TlsFiles

    if listen is None:
        return None, None
    host, sep, port = listen.rpartition(":")
    if not sep or not port.isdigit() or not 0 < int(port) < 65536:
        raise MeshctlError(f"--listen {listen}: expected ADDRESS:PORT, e.g. 0.0.0.0:4250")
    if insecure:
        return (host or "0.0.0.0", int(port)), None
    files = TlsFiles.from_env(ca, cert, key)
    if files is None:
        raise MeshctlError("--listen serves mutual TLS: give --tls-ca, --tls-cert and --tls-key "
                           "(or $MESHCTL_AGENT_CA/_CERT/_KEY), or --insecure for a lab")
    return (host or "0.0.0.0", int(port)), files.server_context()

