"""`meshctl encryption status|rollout|rotate`: transparent encryption (WireGuard) between nodes.

Nodes are read through the workspace's backend (meshctl.backend): the lab, or each node's agent
with `[apply] driver = "agent"`; the WireGuard reconcile itself always runs on the node.
"""

from __future__ import annotations

from pathlib import Path
from typing import Annotated

import typer

from meshctl.cli.main import app
from meshctl.cli.plan import RepoOpt, stderr

sub = typer.Typer(help="Transparent encryption between nodes (WireGuard).", no_args_is_help=True)
app.add_typer(sub, name="encryption")


@sub.command("status")
def status(repo: RepoOpt = Path(".")) -> None:
    """Each node's WireGuard device, public key and peers (routed = traffic goes through it)."""
    from meshctl.app.workspace import open_workspace

    ws = open_workspace(repo)
    cfg = ws.config.encryption
    print(f"encryption: {'enabled' if cfg.enabled else 'disabled'} ({cfg.type}, port {cfg.listen_port}, "
          f"strictMode {str(cfg.strict_mode).lower()}, nodeEncryption {str(cfg.node_encryption).lower()})")
    for node, state in ws.backend.observe_many(ws.node_order).items():
        w = state.encryption
        if not w.interface:
            print(f"  {node}: no WireGuard device")
            continue
        routed = sum(p.routed for p in w.peers.values())
        print(f"  {node}: {w.interface} public key {w.public_key} port {w.listen_port}, "
              f"{len(w.peers)} peer(s), {routed} routed, strict drops to {len(w.strict)} CIDR(s)")
        for key, p in w.peers.items():
            ips = ",".join(map(str, p.allowed_ips))
            print(f"    peer {key} {p.endpoint} allowed {ips} {'routed' if p.routed else 'accept-only'}")


@sub.command("rollout")
def rollout(
    repo: RepoOpt = Path("."),
    max_steps: Annotated[int, typer.Option("--max-steps", help="Give up after this many steps.")] = 6,
) -> None:
    """Plan + apply the safe WireGuard steps (enable, disable, rotate) until nothing is left."""
    from meshctl.app.rollout import rollout as run
    from meshctl.app.workspace import open_workspace
    from meshctl.cli.apply import progress_printer

    ws = open_workspace(repo)
    steps = run(ws, on_event=progress_printer(), max_steps=max_steps)  # type: ignore[arg-type]
    for step in steps:
        short = step.plan_id.removeprefix("sha256:")[:12]
        print(f"step {step.number}: {step.changes} change(s) {step.verdict} (plan {short})")
    print(f"Encryption rollout complete after {len(steps)} step(s).")


@sub.command("rotate")
def rotate(
    node: Annotated[str, typer.Option("--node", help="The node whose key to replace.")],
    repo: RepoOpt = Path("."),
) -> None:
    """Request a key rotation of NODE; `meshctl encryption rollout` (or apply, repeated) does it."""
    from meshctl.app.workspace import open_workspace, select_nodes
    from meshctl.dataplane.wireguard import rotation
    from meshctl.errors import MeshctlError

    ws = open_workspace(repo)
    select_nodes(ws, [node])
    live = ws.backend.observe(node).encryption
    if not live.interface or not live.public_key:
        raise MeshctlError(f"node {node} has no WireGuard key to rotate (is encryption enabled and applied?)")
    rotation.request(ws.state_dir, node, live.public_key)
    stderr().print(f"rotation of {node} requested (current public key {live.public_key})")
    print(f"Rotation of {node} recorded. Run `meshctl encryption rollout -C {repo}` "
          "(or `meshctl plan` to review the first step).")
