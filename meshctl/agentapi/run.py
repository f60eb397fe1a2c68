"""Start the node API inside `meshctl agent`: a thread next to the flow loop, same stop event."""

from __future__ import annotations

import logging
import threading
from pathlib import Path

from meshctl.agentapi.protocol import socket_path

log = logging.getLogger(__name__)


def node_netns(cluster: str, node: str) -> str | None:
    """The lab netns of `node` when this host runs that cluster's lab, else None (the host's own)."""
    from meshctl.errors import LabError
    from meshctl.lab import registry

    try:
        reg = registry.load(cluster)
    except LabError:  # an unreadable registry means "not a lab node"
        return None
    rec = reg.nodes.get(node) if reg else None
    return rec.netns if rec else None


def start_api(cluster: str, node: str, path: Path | None, stop: threading.Event,
              journal_dir: Path | None = None, store: Path | None = None) -> threading.Thread:
    """Serve until `stop`; a failure to serve is logged, never fatal for the flow agent.

    `store`: the agent's flow store, where verify looks up the drops of its probes."""
    from meshctl.agentapi.server import serve

    sock = path or socket_path(cluster, node)
    netns = node_netns(cluster, node)

    def main() -> None:
        try:
            serve(cluster, node, netns, sock, stop, journal_dir=journal_dir, store=store)
        except Exception as err:
            log.error("agent %s: no API on %s: %s", node, sock, err)

    thread = threading.Thread(target=main, name=f"agent-api-{node}", daemon=True)
    thread.start()
    return thread
