"""`meshctl uninstall --node N`: remove meshctl's programs, maps and devices from one node.

Through the workspace's backend: the lab's kernel, or the node's agent (POST /v1/uninstall,
the agent removes them itself). The node's record leaves the state (serial + 1), so drift says
it was never applied and the next apply installs it again from scratch.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import TYPE_CHECKING

from meshctl.app.workspace import ensure_not_interrupted, select_nodes

if TYPE_CHECKING:
    from meshctl.app.workspace import Workspace
    from meshctl.nodestate import NodeState


@dataclass(frozen=True)
class Uninstalled:
    node: str
    before: NodeState  # what meshctl had on the node
    serial: int

    def summary(self) -> str:
        b = self.before
        parts = [f"{len(b.attachments)} program attachments", f"{len(b.endpoints)} endpoints",
                 f"{len(b.policies)} policy maps", f"{len(b.ipcache)} ipcache entries"]
        if b.encryption.interface:
            parts.append(f"WireGuard device {b.encryption.interface}")
        return (f"node {self.node}: removed {', '.join(parts)}, and every pinned map and program.\n"
                f"State serial is now {self.serial}.")


def uninstall_node(ws: Workspace, node: str) -> Uninstalled:
    """Remove everything meshctl made on `node`; refused while an apply is interrupted."""
    from meshctl.app.workspace import load_cluster_state
    from meshctl.state import save_state

    (node,) = select_nodes(ws, [node])
    ensure_not_interrupted(ws.state_dir)
    with ws.lock("uninstall"):
        state = load_cluster_state(ws).state
        before = ws.backend.uninstall(node, ws.state_dir)
        state = save_state(ws.state_dir, state.forget_node(node))
    return Uninstalled(node, before, state.serial)
