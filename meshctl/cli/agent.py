"""`meshctl agent --node NODE`: consume a node's flow events into the flow store, serve metrics."""

from __future__ import annotations

import logging
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


@app.command("agent")
def agent(node: str = NodeOpt, repo: Path = RepoOpt, cluster: str | None = ClusterOpt,
          store: Path | None = StoreOpt, metrics_address: str | None = AddrOpt,
          metrics_port: int | None = PortOpt, api: bool = ApiOpt,
          api_socket: Path | None = ApiSocketOpt) -> None:
    """Run the flow agent of one node in the foreground (stop with SIGTERM or Ctrl-C)."""
    from meshctl.flows.agent import Agent, AgentSettings
    from meshctl.flows.context import change_token, repo_info, try_load_context
    from meshctl.flows.enrich import EnrichContext
    from meshctl.flows.filters import parse_duration
    from meshctl.flows.store import store_path

    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(message)s", stream=sys.stderr)
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
        journal_dir = info.state_dir / "agents" / node
    runner.install_signal_handlers()
    api_thread = None
    if api:
        from meshctl.agentapi.protocol import socket_path
        from meshctl.agentapi.run import start_api
        from meshctl.lab.agentservice import lab_service, node_netns

        sock = api_socket or socket_path(runner.s.cluster, node)
        journal_dir = journal_dir or sock.parent / f"journal-{runner.s.cluster}-{node}"
        service = lab_service(runner.s.cluster, node, node_netns(runner.s.cluster, node), journal_dir,
                              runner.s.store)
        api_thread = start_api(runner.s.cluster, service, sock, runner.stop)
    runner.run()
    if api_thread is not None:
        runner.stop.set()
        api_thread.join(5)
