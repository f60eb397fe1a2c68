"""Node agents serving the real agent API on unix sockets, for a cluster's nodes in a unit test.

Each node is a value (no kernel); `endpoint_ids` is what its agent allocated for its pods, as
the Kubernetes inventory's agents do (meshctl.agentapi.kubeinventory), answered on
GET /v1/endpoints.
"""

from __future__ import annotations

import threading
from collections.abc import Iterator, Mapping
from contextlib import contextmanager
from pathlib import Path
from typing import Any

from meshctl.agentapi.protocol import socket_path
from meshctl.agentapi.server import serve
from meshctl.agentapi.service import NodeService
from meshctl.nodestate import NodeState


class ValueNode:
    def __init__(self, node: str) -> None:
        self.state = NodeState(node)

    def observe(self, node: str) -> NodeState:
        return self.state

    def reconcile(self, node: str, current: NodeState, target: NodeState) -> None:
        self.state = target

    def drop_counts(self, node: str) -> dict[tuple[int, int, int], int]:
        return {}


@contextmanager
def served_agents(cluster: str, sockets: Path,
                  endpoint_ids: Mapping[str, Mapping[str, Any] | None]) -> Iterator[dict[str, NodeService]]:
    """One agent per node of `endpoint_ids` (node -> its EndpointTable.as_dict(), or None)."""
    stop, threads, services = threading.Event(), [], {}
    try:
        for node, table in endpoint_ids.items():
            svc = NodeService(node, ValueNode(node), sockets / f"journal-{node}")
            if table is not None:
                svc.endpoint_ids = lambda table=table: table
            ready = threading.Event()
            thread = threading.Thread(target=serve, args=(svc, socket_path(cluster, node, sockets), stop),
                                      kwargs={"ready": ready}, daemon=True)
            thread.start()
            assert ready.wait(10)
            threads.append(thread)
            services[node] = svc
        yield services
    finally:
        stop.set()
        for thread in threads:
            thread.join(10)
