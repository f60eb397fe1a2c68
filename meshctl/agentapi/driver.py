"""The apply engine's NodeDriver over node agents (`[apply] driver = "agent"` in meshctl.toml).

Each node is reached through its agent's unix socket (protocol.socket_path). Reconcile sends the
target with the fingerprint of the before-state the engine holds, so a node that moved since it
was observed refuses (409) instead of being overwritten; the engine then reverts as it does for
any failed node. Checks run on the agent of the source pod's node.
"""

from __future__ import annotations

import threading
import time
import uuid
from collections.abc import Iterable, Mapping
from ipaddress import IPv4Address
from pathlib import Path

from meshctl.agentapi.client import AgentClient
from meshctl.agentapi.protocol import AgentApiError, StaleNodeError, WireCheck, socket_path
from meshctl.agentapi.tls import TcpEndpoint
from meshctl.apply.gates import CheckLike, CheckOutcome, MetricCounts, ProbeAttempt
from meshctl.nodestate import NodeState

HOLD_POLL_S = 0.2


class AgentDriver:
    """Every node of one cluster, through the agent listening on that node's socket.

    With `lease_s`, the applies of this driver are one apply session (meshctl.agentapi.session):
    each node it changes is held, a thread renews the leases every third of `lease_s` while the
    rollout runs, and `end_session` lets the nodes go once the apply is recorded. If this process
    dies, the leases run out and each node's agent puts its node back at its before-state."""

    def __init__(self, cluster: str, nodes: Iterable[str] | Mapping[str, Path | TcpEndpoint],
                 directory: str | Path | None = None, plan_id: str = "",
                 lease_s: float | None = None) -> None:
        """`nodes`: names (their unix sockets in `directory`), or each node's endpoint."""
        self.cluster, self.plan_id, self.lease_s = cluster, plan_id, lease_s
        if not isinstance(nodes, Mapping):
            nodes = {n: socket_path(cluster, n, directory) for n in nodes}
        self.clients = {n: AgentClient(n, where) for n, where in nodes.items()}
        self.session_id = uuid.uuid4().hex
        self.held: set[str] = set()
        self.changed: set[str] = set()  # nodes this session applied to
        self.lost: dict[str, str] = {}  # node -> why its lease could not be renewed
        self._stop = threading.Event()
        self._renewer: threading.Thread | None = None

    def client(self, node: str) -> AgentClient:
        try:
            return self.clients[node]
        except KeyError:
            raise AgentApiError(node, f"not a node of {self.cluster}") from None

    def observe(self, node: str) -> NodeState:
        return self.client(node).observe()

    def hold(self, nodes: Iterable[str], wait_s: float = 0.0) -> None:
        """Lock `nodes` for this session, one by one in the order given (every apply takes them in
        the config's node order, so two applies never wait on each other in a circle). A node
        another session holds is waited for up to `wait_s` (--lock-timeout); then the nodes taken
        so far are let go and the holder is named."""
        assert self.lease_s is not None, "only an apply session holds nodes"
        deadline = time.monotonic() + wait_s
        for node in nodes:
            while True:
                try:
                    self.client(node).open_session(self.session_id, self.lease_s)
                    break
                except StaleNodeError as err:
                    if err.held is None or time.monotonic() >= deadline:
                        self.end_session(self.held)
                        hint = "" if err.held is None else "; pass --lock-timeout (e.g. 5m) to wait for it"
                        raise AgentApiError(node, f"{err.detail}{hint}", 409) from None
                    time.sleep(HOLD_POLL_S)
            self.held.add(node)
            self._start_renewing()

    def reconcile(self, node: str, current: NodeState, target: NodeState) -> None:
        if self.lease_s is None:
            self.client(node).apply(target, current.fingerprint(), self.plan_id)
            return
        self.client(node).apply(target, current.fingerprint(), self.plan_id,
                                {"id": self.session_id, "lease_s": self.lease_s})
        self.held.add(node)  # held until the session ends (or its agent reverts it when silent)
        self.changed.add(node)
        self._start_renewing()

    def _start_renewing(self) -> None:
        if self._renewer is None:
            self._renewer = threading.Thread(target=self._renew, name="lease-renewal", daemon=True)
            self._renewer.start()

    def _renew(self) -> None:
        assert self.lease_s is not None
        while not self._stop.wait(self.lease_s / 3):
            for node in sorted(self.held - set(self.lost)):
                try:
                    self.client(node).renew(self.session_id, self.lease_s)
                except AgentApiError as err:  # not held any more: its agent reverted it, or it ended
                    self.lost[node] = str(err)

    def end_session(self, nodes: Iterable[str]) -> list[str]:
        """Stop renewing; let `nodes` and the held nodes this session never changed go (they stay
        as they are). A changed node left out stays held until its lease runs out and its agent
        puts it back. Returns the errors of nodes that were no longer held (their lease ran out)."""
        self._stop.set()
        if self._renewer is not None:
            self._renewer.join(5)
        errors = [f"node {n}: {why}" for n, why in sorted(self.lost.items())]
        for node in sorted((set(nodes) | (self.held - self.changed)) & self.held - set(self.lost)):
            try:
                self.client(node).end_session(self.session_id)
            except AgentApiError as err:
                errors.append(str(err))
        return errors

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
