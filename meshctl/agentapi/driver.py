"""The apply engine's NodeDriver over node agents (`[apply] driver = "agent"` in meshctl.toml).

Each node is reached through its agent's unix socket (protocol.socket_path). Reconcile sends the
target with the fingerprint of the before-state the engine holds, so a node that moved since it
was observed refuses (409) instead of being overwritten; the engine then reverts as it does for
any failed node. Checks run on the agent of the source pod's node.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from ipaddress import IPv4Address
from pathlib import Path

from meshctl.agentapi.client import AgentClient
from meshctl.agentapi.protocol import AgentApiError, WireCheck, socket_path
from meshctl.agentapi.tls import TcpEndpoint
from meshctl.apply.gates import CheckLike, CheckOutcome, MetricCounts, ProbeAttempt
from meshctl.nodestate import NodeState


class AgentDriver:
    """Every node of one cluster, through the agent listening on that node's socket."""

    def __init__(self, cluster: str, nodes: Iterable[str] | Mapping[str, Path | TcpEndpoint],
                 directory: str | Path | None = None, plan_id: str = "") -> None:
        """`nodes`: names (their unix sockets in `directory`), or each node's endpoint."""
        self.cluster, self.plan_id = cluster, plan_id
        if not isinstance(nodes, Mapping):
            nodes = {n: socket_path(cluster, n, directory) for n in nodes}
        self.clients = {n: AgentClient(n, where) for n, where in nodes.items()}

    def client(self, node: str) -> AgentClient:
        try:
            return self.clients[node]
        except KeyError:
            raise AgentApiError(node, f"not a node of {self.cluster}") from None

    def observe(self, node: str) -> NodeState:
        return self.client(node).observe()

    def reconcile(self, node: str, current: NodeState, target: NodeState) -> None:
        self.client(node).apply(target, current.fingerprint(), self.plan_id)

    def drop_counts(self, node: str) -> MetricCounts:
        return self.client(node).drops()


class AgentCheckRunner:
    """Callable(probe) -> CheckOutcome: the connection is made by the source pod's node agent.

    The source agent answers with the connection's 5-tuple and window; a connection that failed
    is then judged with the drops the agent of every node it crossed recorded for it
    (meshctl.apply.probes.judge): "denied" needs a policy drop on one of them.
    """

    def __init__(self, driver: AgentDriver, pod_nodes: Mapping[str, str], pod_ips: Mapping[str, IPv4Address]
                 ) -> None:
        self.driver, self.pod_nodes, self.pod_ips = driver, dict(pod_nodes), dict(pod_ips)

    def __call__(self, check: CheckLike) -> CheckOutcome:
        from meshctl.apply.checks import destination_ip
        from meshctl.apply.gates import check_nodes
        from meshctl.apply.probes import judge, missing
        from meshctl.errors import ApplyError

        node = self.pod_nodes.get(check.from_)
        if node is None:
            return missing(check, f"source pod {check.from_} is on no node")
        try:
            to = str(destination_ip(check, self.pod_ips))
        except ApplyError as err:
            return missing(check, str(err))
        answer = self.driver.client(node).verify([WireCheck.of(check, to=to)])
        (result,) = answer["checks"]
        if "attempt" not in result:  # an agent that judged alone
            return CheckOutcome(check, str(result["observed"]), str(result.get("detail", "")))
        attempt = ProbeAttempt.from_json(result["attempt"])
        if attempt.connected:
            return judge(check, True, "", ())
        nodes = tuple(getattr(check, "nodes", ()) or check_nodes(check, self.pod_nodes) or (node,))
        drops = [d for n in nodes for d in self.driver.client(n).drops_of([attempt])[0]]
        outcome = judge(check, False, attempt.error, drops)
        return CheckOutcome(check, outcome.observed, outcome.detail, outcome.drops, attempt)
