"""`meshctl lab up|down|status|exec`: the embedded cluster of network namespaces on this host."""

from __future__ import annotations

import logging
import os
import sys
from pathlib import Path
from typing import TYPE_CHECKING, Annotated

import typer

from meshctl.cli.main import app
from meshctl.errors import LabError, MeshctlError

if TYPE_CHECKING:
    from rich.console import Console

    from meshctl.lab.pods import PodChange

lab_app = typer.Typer(help="The embedded lab cluster: nodes and pods as network namespaces.",
                      no_args_is_help=True)
app.add_typer(lab_app, name="lab")

RepoOpt = typer.Option(Path("."), "-C", "--repo", help="Desired-state repo (with meshctl.toml).")
ClusterOpt = typer.Option(None, "--cluster", help="Lab name (default: cluster.name of the repo).")


def _err() -> Console:
    from rich.console import Console

    return Console(stderr=True)


def _root() -> None:
    if os.geteuid() != 0:
        raise LabError("the lab needs root (network namespaces, BPF)")


def _cluster(repo: Path, cluster: str | None) -> tuple[str, tuple[str, ...]]:
    from meshctl.lab.repo import cluster_of

    if cluster:
        return cluster, ()
    return cluster_of(repo)


@lab_app.command("up")
def up(repo: Path = RepoOpt,
       datapath: bool = typer.Option(True, "--datapath/--no-datapath",
                                     help="Attach the eBPF datapath on pod veths.")) -> None:
    """Build (or complete) the lab described by REPO's meshctl.toml and Pod manifests."""
    from meshctl.lab import cluster
    from meshctl.lab.repo import lab_desired
    from meshctl.lab.topology import from_desired

    _root()
    logging.basicConfig(level=logging.WARNING, format="%(message)s", stream=sys.stderr)
    desired = lab_desired(repo)
    topo = from_desired(desired)
    res = cluster.up(topo, with_datapath=datapath)
    reg = res.registry
    revision = None
    if desired.config.inventory.source == "lab":  # the lab is the inventory; its agents follow it
        from meshctl.lab.cni import open_intents
        from meshctl.lab.pods import seed

        revision = seed(reg.cluster, desired.pods, desired.namespaces)
        if res.datapath and res.fresh_nodes:
            open_intents(desired, res.fresh_nodes)
    elif res.datapath and (res.fresh_nodes or res.created_pods):  # as the CNI does: pods get endpoints
        from meshctl.lab.cni import program_nodes

        try:
            programmed = program_nodes(repo, reg.cluster, res.fresh_nodes, res.created_pods)
            if any(programmed.values()):
                _err().print(f"lab {reg.cluster}: {sum(programmed.values())} pod endpoints programmed,"
                             " no policy in force yet", soft_wrap=True)
        except MeshctlError as err:  # the nodes stay closed (NO_ENDPOINT) until an apply
            _err().print(f"lab {reg.cluster}: pod endpoints not programmed ({err}); pods stay"
                         " dropped until `meshctl apply`", soft_wrap=True, markup=False)
    if res.datapath:  # one flow agent per node (meshctl/lab/agents.py, owned by flows)
        from meshctl.lab import agents

        agents.start(repo, reg.cluster, list(reg.nodes), agents.tcp_apis(reg, topo.agents))
        if revision is not None:  # as the CNI returns once the endpoints exist
            from meshctl.lab.pods import wait_synced

            waited, lagging = wait_synced(desired.config.state_dir, list(reg.nodes), revision, 30.0)
            opened = " (no policy in force yet)" if res.fresh_nodes else ""
            _err().print(f"lab {reg.cluster}: the node agents keep {len(reg.pods)} pods' endpoints in step "
                         f"with the lab's inventory (revision {revision}){opened}", soft_wrap=True)
            if lagging:
                _err().print(f"lab {reg.cluster}: the agents of {', '.join(lagging)} did not bring their "
                             f"endpoints in step within {waited:.0f} s (see their logs)", soft_wrap=True)
    _err().print(f"lab {reg.cluster}: {len(reg.nodes)} nodes, {len(reg.pods)} pods up"
                 f" (datapath {'attached' if res.datapath else 'not attached'})")
    _print_status(reg.cluster)


@lab_app.command("down")
def down(repo: Path = RepoOpt, cluster: str | None = ClusterOpt) -> None:
    """Remove everything the lab made (netns, pins, server processes), also after a crash."""
    from meshctl.lab import cluster as lab

    _root()
    name, nodes = _cluster(repo, cluster)
    from meshctl.lab import agents

    stopped = agents.stop(name)
    res = lab.down(name, nodes)
    if stopped:
        print(f"lab {name}: stopped {len(stopped)} flow agents")
    print(f"lab {name}: removed {len(res.netns)} network namespaces, stopped {len(res.pids)} servers"
          + (", removed BPF pins" if res.pins else ""))


@lab_app.command("status")
def status(repo: Path = RepoOpt, cluster: str | None = ClusterOpt) -> None:
    """List the lab's nodes and pods with their addresses."""
    from meshctl.lab import registry

    if cluster is None and not (repo / "meshctl.toml").exists():
        labs = registry.clusters()
        if not labs:
            print("no lab is up")
            return
        for name in labs:
            _print_status(name)
        return
    name, _ = _cluster(repo, cluster)
    _print_status(name)


def _print_status(name: str) -> None:
    from rich.console import Console
    from rich.table import Table

    from meshctl.lab.cluster import status as lab_status
    from meshctl.lab.servers import is_lab_server

    reg, nodes = lab_status(name)
    table = Table(title=f"lab {name} (underlay {reg.underlay_cidr}, datapath "
                        f"{'attached' if reg.datapath else 'off'})")
    for col in ("node / pod", "netns", "address", "interface", "ports", "state"):
        table.add_column(col)
    for n in nodes:
        table.add_row(f"[bold]{n.record.name}[/bold]", n.record.netns,
                      f"{n.record.underlay_ip} (pods {n.record.pod_cidr})", "eth0", "",
                      "ok" if n.netns_ok else "[red]netns missing[/red]")
        for p in n.pods:
            r = p.record
            ports = " ".join([f"{x}/tcp" for x in r.tcp_ports] + [f"{x}/udp" for x in r.udp_ports])
            state = "ok" if p.netns_ok and p.server_ok else (
                "[red]netns missing[/red]" if not p.netns_ok else "[red]server down[/red]")
            table.add_row(f"  {r.key}", r.netns, r.ip, r.veth, ports, state)
    if reg.external is not None:
        ext = reg.external
        table.add_row("[bold]external client[/bold]", ext.netns,
                      f"{ext.underlay_ip} (via {ext.via_node}: {', '.join(ext.routes) or 'no routes'})",
                      "eth0", "", "ok" if os.path.exists(f"/run/netns/{ext.netns}")
                      else "[red]netns missing[/red]")
        for h in ext.hosts:  # [[lab.externalHosts]]: the lab's kube-dns answers for these names
            up = h.server_pid is not None and is_lab_server(h.server_pid, name, h.key)
            table.add_row(f"  {h.key}", ext.netns, h.ip, "eth0", " ".join(f"{x}/tcp" for x in h.tcp_ports),
                          "ok" if up else "[red]server down[/red]")
    Console(width=160).print(table)


pod_app = typer.Typer(help="Add and delete the lab's pods as a cluster does, without a plan "
                      "([inventory] source = \"lab\").", no_args_is_help=True)
lab_app.add_typer(pod_app, name="pod")
LabelOpt = typer.Option("--label", "-l", help="KEY=VALUE (repeat).")
PortOpt = typer.Option("--port", "-p", help="PORT/TCP or PORT/UDP the pod serves (repeat; "
                       "NAME=PORT/PROTO names the port).")


@pod_app.command("add")
def pod_add(pod: Annotated[str, typer.Argument(help="NS/NAME")],
            node: Annotated[str, typer.Option("--node", help="Node to run the pod on.")],
            label: Annotated[list[str] | None, LabelOpt] = None,
            port: Annotated[list[str] | None, PortOpt] = None,
            repo: Path = RepoOpt) -> None:
    """Start a pod: netns, server, datapath; its node's agent gives it its endpoint and identity."""
    from meshctl.flows.context import repo_info
    from meshctl.lab.pods import add_pod, parse_labels, parse_ports

    _root()
    info = repo_info(repo)
    labels, ports = parse_labels(label or []), parse_ports(port or [])
    change = add_pod(info.state_dir, info.cluster, pod, node, labels, ports)
    _report(change, "added", f"on {change.node} at {change.ip}")


@pod_app.command("delete")
def pod_delete(pod: Annotated[str, typer.Argument(help="NS/NAME")], repo: Path = RepoOpt) -> None:
    """Stop a pod: the agents drop its endpoint and ipcache entries, then its netns goes."""
    from meshctl.flows.context import repo_info
    from meshctl.lab.pods import delete_pod

    _root()
    info = repo_info(repo)
    change = delete_pod(info.state_dir, info.cluster, pod)
    _report(change, "deleted", f"from {change.node}")


def _report(change: PodChange, verb: str, where: str) -> None:
    print(f"pod {change.key} {verb} {where} (inventory revision {change.revision}); "
          f"agents in step after {change.waited_s * 1000:.0f} ms")
    if change.lagging:
        _err().print(f"[yellow]not yet in step:[/yellow] the agents of {', '.join(change.lagging)} "
                     "(see their logs under the lab's run dir)", soft_wrap=True)


@lab_app.command("exec", context_settings={"allow_extra_args": True, "ignore_unknown_options": True})
def exec_(pod: Annotated[str, typer.Argument(help="NS/POD")],
          command: Annotated[list[str], typer.Argument(help="Command to run inside the pod")],
          repo: Path = RepoOpt, cluster: str | None = ClusterOpt) -> None:
    """Run a command inside a pod's network namespace (BPF pins stay visible): exec NS/POD -- CMD."""
    from meshctl.lab import registry
    from meshctl.lab.netns import nsenter_argv

    _root()
    name, _ = _cluster(repo, cluster)
    rec = registry.pod(name, pod)
    argv = nsenter_argv(rec.netns, command)
    sys.stdout.flush()
    os.execvp(argv[0], argv)
