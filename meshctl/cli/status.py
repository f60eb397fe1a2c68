"""`meshctl status`: nodes, programs and builds, map fill, agents, last apply, drift."""

from __future__ import annotations

import json
from dataclasses import asdict
from datetime import UTC, datetime
from pathlib import Path

import typer

from meshctl.cli.main import app
from meshctl.cli.options import TextOrJson
from meshctl.plan.staged import age_text

RepoOpt = typer.Option(Path("."), "-C", "--repo", help="Desired-state repo (with meshctl.toml).")
OutOpt = typer.Option(TextOrJson.text, "-o", "--output", help="text or json.")


def staged_summary(staged: dict[str, str]) -> str:
    if not staged:
        return "none"
    n = len(staged)
    noun = "policy" if n == 1 else "policies"
    return f"{n} {noun} in audit mode (loaded, not enforced; `meshctl audit report`)"


def _seconds_since(iso: str) -> float:
    return (datetime.now(UTC) - datetime.fromisoformat(iso)).total_seconds()


@app.command("status")
def status(repo: Path = RepoOpt, output: TextOrJson = OutOpt) -> None:
    """Show the cluster's datapath status (exit 1 when a node has no datapath or fails to read)."""
    from rich.console import Console
    from rich.table import Table

    from meshctl.app.status import cluster_status

    st = cluster_status(repo)
    if output is TextOrJson.json:
        print(json.dumps({**asdict(st), "ok": st.ok}, indent=2, sort_keys=True))
        raise typer.Exit(0 if st.ok else 1)
    short = (st.current_build or "unknown")[:12]
    console = Console(width=160)
    console.print(f"Cluster:        {st.cluster}")
    console.print(f"Datapath build: {short} (bpf/build/datapath.o)")
    agents_up = sum(1 for n in st.nodes if n.agent_pid or n.agent.startswith("up"))
    console.print(f"Flow agents:    {agents_up}/{len(st.nodes)} up")
    plan = (st.last_plan_id or "").removeprefix("sha256:")[:12]
    last = (f"plan {plan} serial {st.state_serial} at {st.last_applied_at}"
            if st.last_plan_id else f"never (serial {st.state_serial})")
    console.print(f"Last apply:     {last}")
    drifted = [f"{n.name}: {n.drift_objects} object(s)" + (
        f", {len(n.foreign_programs)} foreign program(s)" if n.foreign_programs else "")
        for n in st.nodes if n.drift == "yes"]
    unknown = [n.name for n in st.nodes if n.drift.startswith("unknown")]
    pending = [n.name for n in st.nodes if n.drift in ("not applied", "never applied") and n.drift_objects]
    word = "yes (" + ", ".join(drifted) + "; `meshctl drift` shows them)" if drifted else "no"
    if pending:
        word += f"; the desired state is not applied yet on {', '.join(pending)} (`meshctl plan` shows it)"
    if unknown and not drifted:
        word = f"no ({', '.join(unknown)}: unknown)" if len(unknown) < len(st.nodes) else "unknown"
    console.print(f"Drift:          {word}")
    console.print(f"Encryption:     {st.encryption}")
    console.print(f"Load balancer:  {st.load_balancer}")
    console.print(f"Staged:         {staged_summary(st.staged)}")
    for policy, since in st.staged.items():
        console.print(f"  {policy}: audit mode for {age_text(_seconds_since(since))} (since {since})")
    table = Table(title="Nodes")
    for col in ("node", "programs", "build", "endpoints", "map fill", "learned IPs", "agent", "drift",
                "error"):
        table.add_column(col)
    for n in st.nodes:
        build = "-" if not n.loaded_build else (
            n.loaded_build[:12] + ("" if n.loaded_build == st.current_build else " (outdated)"))
        fill = ", ".join(f"{m.name} {m.entries}/{m.capacity} ({m.percent:.1f}%)" for m in n.maps)
        table.add_row(n.name, f"{n.attachments} attached", build, str(n.endpoints), fill or "-",
                      str(n.learned_ips), n.agent or (f"up (pid {n.agent_pid})" if n.agent_pid else "down"),
                      n.drift, n.error)
    console.print(table)
    for n in st.nodes:
        for text in n.foreign_programs:
            console.print(f"! {n.name}: {text}")
    raise typer.Exit(0 if st.ok else 1)
