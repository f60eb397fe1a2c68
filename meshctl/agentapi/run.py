"""Start the node API inside `meshctl agent`: a thread next to the flow loop, same stop event."""

from __future__ import annotations

import logging
import ssl
import threading
from pathlib import Path
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from meshctl.agentapi.service import NodeService

log = logging.getLogger(__name__)


def start_api(service: NodeService, where: Path | tuple[str, int], stop: threading.Event,
              tls: ssl.SSLContext | None = None) -> threading.Thread:
    """Serve `service` on a unix socket, or on TCP (mutual TLS with `tls`) until `stop`; a
    failure to serve is logged, never fatal for the flow agent."""
    from meshctl.agentapi.server import serve, serve_tcp

    def main() -> None:
        try:
            if isinstance(where, Path):
                serve(service, where, stop)
            else:
                serve_tcp(service, where, tls, stop)
        except Exception as err:
            log.error("agent %s: no API on %s: %s", service.node, where, err)

    thread = threading.Thread(target=main, name=f"agent-api-{service.node}", daemon=True)
    thread.start()
    return thread
