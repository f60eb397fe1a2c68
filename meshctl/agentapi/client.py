"""Client of the agent API (meshctl.agentapi.server): one node's agent, JSON in and out.

The agent is reached on its unix socket (same host), or over TCP with mutual TLS
(meshctl.agentapi.tls: the agent's certificate must name the node).
"""

from __future__ import annotations

import http.client
import json
import ssl
from collections.abc import Iterable, Mapping
from dataclasses import replace
from pathlib import Path
from typing import TYPE_CHECKING, Any

from meshctl.agentapi.protocol import AgentApiError, StaleNodeError, WireCheck, counts_from_json
from meshctl.agentapi.tls import TcpEndpoint, refused_or_plain
from meshctl.apply.gates import MetricCounts, ProbeAttempt, WitnessedDrop
from meshctl.connections import TrackedConnection
from meshctl.dataplane.dnsproxy import CachedIp
from meshctl.localproc import UnixHTTPConnection
from meshctl.nodestate import ForeignProgram, NodeState

if TYPE_CHECKING:
    from meshctl.compile.intent import NodeIntent
    from meshctl.state import State

DEFAULT_TIMEOUT_S = 120.0  # an apply of a big node, or a verify window, can take a while


class _TcpConnection(http.client.HTTPConnection):
    def __init__(self, node: str, endpoint: TcpEndpoint, timeout: float) -> None:
        super().__init__(endpoint.host, endpoint.port, timeout=timeout)
        self.node, self.endpoint = node, endpoint

    def connect(self) -> None:
        self.sock = self.endpoint.connect(self.node, self.timeout)


class AgentClient:
    """observe / apply / revert / verify / drops of the node whose agent listens at `path` (a
    unix socket) or at a TcpEndpoint."""

    def __init__(self, node: str, path: Path | TcpEndpoint, timeout_s: float = DEFAULT_TIMEOUT_S) -> None:
        self.node, self.timeout_s = node, timeout_s
        self.path: Path | TcpEndpoint = path if isinstance(path, TcpEndpoint) else Path(path)

    def _connection(self) -> http.client.HTTPConnection:
        if isinstance(self.path, TcpEndpoint):
            return _TcpConnection(self.node, self.path, self.timeout_s)
        return UnixHTTPConnection(self.path, self.timeout_s)

    def _call(self, method: str, route: str, body: Mapping[str, Any] | None = None) -> dict[str, Any]:
        conn = self._connection()
        try:
            data = json.dumps(body).encode() if body is not None else None
            headers = {"Content-Type": "application/json"} if data is not None else {}
            conn.request(method, route, body=data, headers=headers)
            resp = conn.getresponse()
            raw = resp.read()
        except FileNotFoundError:
            raise AgentApiError(self.node, f"no agent socket at {self.path} (is `meshctl agent --node "
                                f"{self.node}` running with --api?)") from None
        except ssl.SSLError as err:  # TLS 1.3: a refused client certificate shows at the first read
            raise AgentApiError(self.node, refused_or_plain(str(self.path), err)) from None
        except OSError as err:
            raise AgentApiError(self.node, f"{self.path}: {err.strerror or err}") from None
        except http.client.HTTPException as err:
            raise AgentApiError(self.node, f"{self.path}: bad answer ({type(err).__name__})") from None
        finally:
            conn.close()
        try:
            answer = json.loads(raw)
        except ValueError:
            raise AgentApiError(self.node, f"{route}: answer is not JSON (status {resp.status})",
                                resp.status) from None
        if resp.status == 409:
            raise StaleNodeError(self.node, answer.get("error", "conflict"), 409, answer.get("held"))
        if resp.status != 200:
            message = answer.get("error", resp.reason)
            raise AgentApiError(self.node, f"{method} {route}: {message}", resp.status)
        return dict(answer)

    def observe_raw(self) -> dict[str, Any]:
        return self._call("GET", "/v1/observe")

    def observe(self) -> NodeState:
        """The node's live NodeState; the fingerprint is checked against the agent's own."""
        answer = self.observe_raw()
        state = NodeState.from_canonical(answer["state"])
        if state.fingerprint() != answer["fingerprint"]:
            raise AgentApiError(self.node, "observed state does not match its fingerprint (version skew?)")
        programs = tuple(ForeignProgram(**p) for p in answer.get("foreign_programs", ()))
        return replace(state, foreign_programs=programs) if programs else state

    def connections(self) -> tuple[TrackedConnection, ...]:
        """The node's live established connections; an agent without the route answers none."""
        try:
            rows = self._call("GET", "/v1/conntrack")["connections"]
        except AgentApiError as err:
            if err.status == 404:  # an older agent: the plan then says nothing about them
                return ()
            raise
        try:
            return tuple(TrackedConnection.from_json(r) for r in rows)
        except (TypeError, ValueError) as err:
            raise AgentApiError(self.node, f"/v1/conntrack: bad row ({err})") from None

    def fqdn_cache(self) -> list[CachedIp]:
        try:
            return [CachedIp.from_json(r) for r in self._call("GET", "/v1/fqdn/cache")["ips"]]
        except (TypeError, ValueError, KeyError) as err:
            raise AgentApiError(self.node, f"/v1/fqdn/cache: bad row ({err})") from None

    def fqdn_clean(self, pattern: str) -> list[str]:
        return [str(ip) for ip in self._call("POST", "/v1/fqdn/clean", {"pattern": pattern})["removed"]]

    def drops(self) -> MetricCounts:
        return counts_from_json(self._call("GET", "/v1/drops")["counts"])

    def apply(self, target: NodeState, expected_fingerprint: str, plan_id: str = "",
              session: Mapping[str, Any] | None = None) -> dict[str, Any]:
        """Move the node to `target`; StaleNodeError when it is no longer at `expected_fingerprint`.
        With `session` ({"id", "lease_s"}) the node is held (meshctl.agentapi.session)."""
        answer = self._call("POST", "/v1/apply", {
            "target": target.canonical(), "expected_fingerprint": expected_fingerprint, "plan_id": plan_id,
            **({"session": dict(session)} if session else {}),
        })
        if not answer.get("ok"):
            reverted = " (the agent reverted it to its before-state)" if answer.get("reverted") else ""
            raise AgentApiError(self.node, f"apply failed: {answer.get('failure')}{reverted}")
        return answer

    def open_session(self, session_id: str, lease_s: float) -> None:
        self._call("POST", "/v1/session/open", {"id": session_id, "lease_s": lease_s})

    def renew(self, session_id: str, lease_s: float) -> None:
        self._call("POST", "/v1/session/renew", {"id": session_id, "lease_s": lease_s})

    def end_session(self, session_id: str) -> None:
        self._call("POST", "/v1/session/end", {"id": session_id})

    def held_intent(self) -> NodeIntent | None:
        """The intent the node holds (None before its first apply with a runtime inventory)."""
        from meshctl.compile.intent import NodeIntent

        raw = self._call("GET", "/v1/intent", None).get("intent")
        try:
            return None if raw is None else NodeIntent.from_json(raw)
        except ValueError as err:
            raise AgentApiError(self.node, f"its intent is unreadable: {err}") from None

    def record_intent(self, intent: NodeIntent, fingerprint: str) -> dict[str, Any]:
        """Hand the node the intent of its applied state (at `fingerprint`): its agent follows pods."""
        return self._call("POST", "/v1/intent", {"intent": intent.to_json(), "fingerprint": fingerprint})

    def held_share(self) -> State | None:
        """The node's share of the state (meshctl.state.cluster), or None."""
        from meshctl.state.cluster import share_of

        raw = self._call("GET", "/v1/share").get("share")
        if raw is None:
            return None
        try:
            return share_of(raw, self.node)
        except ValueError as err:
            raise AgentApiError(self.node, f"/v1/share: {err}") from None

    def record_share(self, share: Mapping[str, Any]) -> None:
        self._call("POST", "/v1/share", {"share": share})

    def endpoint_table(self) -> dict[str, Any] | None:
        """The endpoint ids the node's agent gave its pods (EndpointTable.as_dict()), or None."""
        table = self._call("GET", "/v1/endpoints").get("endpoint_ids")
        if table is not None and not isinstance(table, dict):
            raise AgentApiError(self.node, "/v1/endpoints: endpoint_ids is not an object")
        return table

    def revert(self, before: NodeState) -> dict[str, Any]:
        return self._call("POST", "/v1/revert", {"before": before.canonical()})

    def uninstall(self) -> NodeState:
        """Remove meshctl's programs, maps and devices from the node; what was there."""
        return NodeState.from_canonical(self._call("POST", "/v1/uninstall", {})["before"])

    def drops_of(self, attempts: list[ProbeAttempt]) -> list[list[WitnessedDrop]]:
        """This node's recorded drops of each connection (made by any node's agent)."""
        answer = self._call("POST", "/v1/flowdrops", {"attempts": [a.to_json() for a in attempts]})
        return [[WitnessedDrop(self.node, int(r), int(n), str(src)) for r, n, src in drops]
                for drops in answer["drops"]]

    def window_drops(self, since_ns: int, until_ns: int, counted: int = 0) -> list[list[Any]] | None:
        """Every drop the node's agent stored in the window (flowdrops.wire_rows), None without a store."""
        answer = self._call("POST", "/v1/flowdrops", {"since_ns": since_ns, "until_ns": until_ns,
                                                      "counted": counted})
        rows = answer.get("rows")
        return None if rows is None else [list(r) for r in rows]

    def verify(self, checks: Iterable[WireCheck] = (), window_s: float = 0.0, threshold_per_s: float = 0.0,
               predicted: int = 0) -> dict[str, Any]:
        return self._call("POST", "/v1/verify", {
            "checks": [c.to_json() for c in checks], "window_s": window_s,
            "threshold_per_s": threshold_per_s, "predicted": predicted,
        })
