"""The agent's local API: HTTP/1.1 + JSON on a unix socket (mode 0600, so root on the node only).

    GET  /v1/observe  -> {"state": canonical NodeState, "fingerprint", "interrupted"}
    GET  /v1/drops    -> {"counts": [[verdict, reason, direction, packets], ...]}
    GET  /v1/conntrack -> {"connections": [[saddr, daddr, sport, dport, protocol, direction], ...]}
    GET  /v1/fqdn/cache -> {"ips": [{ip, identity, names, expires}, ...]}  (the DNS proxy's learned IPs)
    POST /v1/fqdn/clean {"pattern"} -> {"removed": [ip, ...]}
    POST /v1/apply    {"target", "expected_fingerprint", "plan_id", "session"}   409 when the node
                      moved or another apply session holds it (meshctl.agentapi.session)
    POST /v1/session/open {"id", "lease_s"}: lock the node for an apply (409 with the holder)
    POST /v1/session/renew {"id", "lease_s"}  POST /v1/session/end {"id"}   409 when not held
    POST /v1/revert   {"before"}
    GET  /v1/intent   -> {"intent": the intent the node holds, or null}
    POST /v1/intent   {"intent", "fingerprint"}: the intent of the applied state (409 elsewhere);
                      the agent's endpoint sync follows pods under it
    GET  /v1/share    -> {"share": the node's share of the state (meshctl.state.cluster), or null}
    POST /v1/share    {"share"}: kept iff the node is at the share's fingerprint (409 elsewhere)
    GET  /v1/endpoints -> {"endpoint_ids": the endpoint ids this agent gave its node's pods, or null}
    POST /v1/uninstall {} -> {"before"}: meshctl's programs, maps and devices removed from the node
    POST /v1/verify   {"checks", "window_s", "threshold_per_s", "predicted"}
    POST /v1/flowdrops {"attempts": [connection 5-tuple and window, ...]} -> this node's drops of each
                      {"since_ns", "until_ns", "counted"} -> every drop of the window, by connection

A unix socket, not TCP: reaching it needs access to the node's filesystem (the DaemonSet's
hostPath /run/meshctl), which is the same trust as loading eBPF there. The stdlib server is
enough: one client (a rollout) at a time, small bodies.
"""

from __future__ import annotations

import json
import logging
import os
import socket
import socketserver
import ssl
import sys
import threading
from collections.abc import Callable
from http.server import BaseHTTPRequestHandler
from pathlib import Path
from typing import Any

from meshctl.agentapi.protocol import AgentApiError
from meshctl.agentapi.service import NodeService, Refused
from meshctl.agentapi.tls import HANDSHAKE_TIMEOUT_S
from meshctl.errors import MeshctlError

log = logging.getLogger(__name__)
MAX_BODY = 64 * 1024 * 1024  # a NodeState of a big node is a few MB of JSON


class _Handler(BaseHTTPRequestHandler):
    protocol_version = "HTTP/1.1"
    server: _Server

    def log_message(self, format: str, *args: Any) -> None:
        log.debug("agent api: " + format, *args)

    def _send(self, status: int, body: dict[str, Any]) -> None:
        data = json.dumps(body, sort_keys=True, separators=(",", ":")).encode()
        self.send_response(status)
        self.send_header("Content-Type", "application/json")
        self.send_header("Content-Length", str(len(data)))
        self.end_headers()
        self.wfile.write(data)

    def _body(self) -> dict[str, Any]:
        length = int(self.headers.get("Content-Length") or 0)
        if length > MAX_BODY:
            raise Refused(413, f"body of {length} bytes exceeds {MAX_BODY}")
        try:
            body = json.loads(self.rfile.read(length) or b"{}")
        except ValueError as err:
            raise Refused(400, f"body is not JSON: {err}") from None
        if not isinstance(body, dict):
            raise Refused(400, "body must be a JSON object")
        return body

    def _dispatch(self, method: str) -> None:
        svc = self.server.service
        routes: dict[tuple[str, str], Callable[[], dict[str, Any]]] = {
            ("GET", "/v1/observe"): svc.observe,
            ("GET", "/v1/drops"): svc.drops,
            ("GET", "/v1/conntrack"): svc.connections,
            ("GET", "/v1/fqdn/cache"): svc.fqdn_cache,
            ("POST", "/v1/fqdn/clean"): lambda: svc.fqdn_clean(self._body()),
            ("POST", "/v1/apply"): lambda: svc.apply(self._body()),
            ("POST", "/v1/revert"): lambda: svc.revert(self._body()),
            ("POST", "/v1/intent"): lambda: svc.intent(self._body()),
            ("POST", "/v1/session/open"): lambda: svc.open_session(self._body()),
            ("POST", "/v1/session/renew"): lambda: svc.renew(self._body()),
            ("POST", "/v1/session/end"): lambda: svc.end_session(self._body()),
            ("GET", "/v1/intent"): svc.held_intent,
            ("POST", "/v1/share"): lambda: svc.record_share(self._body()),
            ("GET", "/v1/share"): svc.held_share,
            ("GET", "/v1/endpoints"): svc.endpoint_table,
            ("POST", "/v1/uninstall"): svc.uninstall,
            ("POST", "/v1/verify"): lambda: svc.verify(self._body()),
            ("POST", "/v1/flowdrops"): lambda: svc.drops_of(self._body()),
        }
        route = routes.get((method, self.path))
        try:
            if route is None:
                raise Refused(404, f"no {method} {self.path} (see meshctl.agentapi.server)")
            self._send(200, route())
        except Refused as err:
            self._send(err.status, {"error": str(err), **err.extra})
        except MeshctlError as err:
            log.warning("agent api %s %s: %s", method, self.path, err)
            self._send(500, {"error": str(err)})
        except Exception as err:  # a bug: say so, keep serving
            log.exception("agent api %s %s failed", method, self.path)
            self._send(500, {"error": f"internal error: {type(err).__name__}: {err}"})

    def do_GET(self) -> None:
        self._dispatch("GET")

    def do_POST(self) -> None:
        self._dispatch("POST")


class _OneLineErrors:
    """A client that hangs up early or fails the TLS handshake (no certificate, another CA) is
    one log line, not a traceback on the agent's stderr."""

    service: NodeService

    def handle_error(self, request: Any, client_address: Any) -> None:
        err = sys.exc_info()[1]
        if isinstance(err, OSError):  # ssl.SSLError is an OSError
            peer = ":".join(map(str, client_address[:2])) if isinstance(client_address, tuple) else "unix"
            why = getattr(err, "reason", None) or err
            log.warning("agent %s: dropped %s: %s", self.service.node, peer, why)
            return
        super().handle_error(request, client_address)  # type: ignore[misc]


class _Server(_OneLineErrors, socketserver.ThreadingMixIn, socketserver.UnixStreamServer):
    daemon_threads = True

    def __init__(self, path: Path, service: NodeService) -> None:
        self.service = service
        super().__init__(str(path), _Handler, bind_and_activate=False)


def answers(path: Path) -> bool:
    """True when something accepts connections on the unix socket `path`."""
    with socket.socket(socket.AF_UNIX, socket.SOCK_STREAM) as s:
        try:
            s.connect(str(path))
        except OSError:
            return False
    return True


def bind(path: Path, service: NodeService) -> _Server:
    """Listen on `path` with mode 0600 from the first instant (bound under a temp name, renamed)."""
    path.parent.mkdir(mode=0o755, parents=True, exist_ok=True)
    if path.exists():
        if answers(path):
            raise AgentApiError(service.node, f"{path} is in use: is another agent of this node running?")
        path.unlink()
    tmp = path.with_name(f".{path.name}.{os.getpid()}")
    tmp.unlink(missing_ok=True)
    server = _Server(path, service)
    try:
        server.socket.bind(str(tmp))
        os.chmod(tmp, 0o600)
        os.rename(tmp, path)
        server.server_address = str(path)
        server.server_activate()
    except BaseException:
        server.server_close()
        tmp.unlink(missing_ok=True)
        raise
    return server


class _TcpServer(_OneLineErrors, socketserver.ThreadingMixIn, socketserver.TCPServer):
    """The API over TCP; with `tls`, each connection is a TLS server socket that requires a
    client certificate signed by the CA (the handshake runs in the connection's thread)."""

    daemon_threads = True
    allow_reuse_address = True

    def __init__(self, address: tuple[str, int], service: NodeService, tls: ssl.SSLContext | None) -> None:
        self.service, self.tls = service, tls
        super().__init__(address, _Handler)

    def get_request(self) -> tuple[socket.socket, Any]:
        sock, addr = self.socket.accept()
        sock.settimeout(HANDSHAKE_TIMEOUT_S)
        if self.tls is None:
            return sock, addr
        return self.tls.wrap_socket(sock, server_side=True, do_handshake_on_connect=False), addr


def serve(service: NodeService, socket_path: Path, stop_event: threading.Event, *,
          ready: threading.Event | None = None) -> None:
    """Serve the node's API on a unix socket until `stop_event` is set; removes the socket after."""
    server = bind(socket_path, service)
    ino = socket_path.stat().st_ino
    log.info("agent %s: API on unix:%s", service.node, socket_path)
    try:
        _run(server, service.node, stop_event, ready)
    finally:
        try:
            if socket_path.stat().st_ino == ino:  # never remove a successor's socket
                socket_path.unlink()
        except FileNotFoundError:
            pass


def serve_tcp(service: NodeService, address: tuple[str, int], tls: ssl.SSLContext | None,
              stop_event: threading.Event, *, ready: threading.Event | None = None) -> None:
    """Serve the node's API on `address` (mutual TLS, or plain with tls=None) until `stop_event`."""
    server = _TcpServer(address, service, tls)
    host, port = server.server_address[:2]
    log.info("agent %s: API on %s://%s:%s", service.node, "https" if tls else "http", host, port)
    _run(server, service.node, stop_event, ready)


def _run(server: socketserver.BaseServer, node: str, stop_event: threading.Event,
         ready: threading.Event | None) -> None:
    waiter = threading.Thread(target=lambda: (stop_event.wait(), server.shutdown()), daemon=True,
                              name=f"agent-api-stop-{node}")
    waiter.start()
    if ready is not None:
        ready.set()
    try:
        server.serve_forever(poll_interval=0.1)
    finally:
        server.server_close()
