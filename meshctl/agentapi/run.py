"""Start the node API inside `meshctl agent`: a thread next to the flow loop, same stop event."""

from __future__ import annotations

import logging
import threading
from pathlib import Path
from typing import TYPE_CHECKING

from meshctl.agentapi.protocol import socket_path

if TYPE_CHECKING:
    from meshctl.agentapi.service import NodeService

log = logging.getLogger(__name__)


def start_api(cluster: str, service: NodeService, path: Path | None,
              stop: threading.Event) -> threading.Thread:
    """Serve `service` until `stop`; a failure to serve is logged, never fatal for the flow agent."""
    from meshctl.agentapi.server import serve

    node = service.node
    sock = path or socket_path(cluster, node)

    def main() -> None:
        try:
            serve(service, sock, stop)
        except Exception as err:
            log.error("agent %s: no API on %s: %s", node, sock, err)

    thread = threading.Thread(target=main, name=f"agent-api-{node}", daemon=True)
    thread.start()
    return thread
