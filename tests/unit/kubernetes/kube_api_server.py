"""A small real HTTP server speaking the Kubernetes v1 list API (JSON, limit + continue).

Not a cluster: it serves fixed Namespaces, Pods, Services and Nodes so the real kubernetes
client can be exercised over real HTTP with real pagination. It checks the bearer token and
records every request so tests can assert the pages asked for.
"""

from __future__ import annotations

import base64
import json
import threading
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any
from urllib.parse import parse_qs, urlparse

KINDS = {"namespaces": "NamespaceList", "pods": "PodList", "services": "ServiceList", "nodes": "NodeList"}


class KubeApiServer:
    def __init__(self, objects: dict[str, list[dict[str, Any]]], token: str = "t0ken") -> None:
        self.objects, self.token = objects, token
        self.requests: list[tuple[str, dict[str, list[str]]]] = []
        self.expire_continue = False
        outer = self

        class Handler(BaseHTTPRequestHandler):
            def log_message(self, *args: object) -> None:
                pass

            def do_GET(self) -> None:
                url = urlparse(self.path)
                query = parse_qs(url.query)
                outer.requests.append((url.path, query))
                if self.headers.get("Authorization") != f"Bearer {outer.token}":
                    return self._send(
                        401, {"kind": "Status", "status": "Failure", "code": 401, "reason": "Unauthorized"}
                    )
                resource = url.path.removeprefix("/api/v1/")
                if resource not in KINDS:
                    return self._send(404, {"kind": "Status", "code": 404, "reason": "NotFound"})
                if outer.expire_continue and "continue" in query:
                    return self._send(410, {"kind": "Status", "code": 410, "reason": "Expired"})
                items = outer.objects.get(resource, [])
                start = int(base64.b64decode(query["continue"][0])) if "continue" in query else 0
                limit = int(query.get("limit", [0])[0]) or len(items)
                page = items[start : start + limit]
                meta: dict[str, Any] = {"resourceVersion": "1"}
                if start + limit < len(items):
                    meta["continue"] = base64.b64encode(str(start + limit).encode()).decode()
                self._send(
                    200, {"kind": KINDS[resource], "apiVersion": "v1", "metadata": meta, "items": page}
                )

            def _send(self, code: int, body: dict[str, Any]) -> None:
                data = json.dumps(body).encode()
                self.send_response(code)
                self.send_header("Content-Type", "application/json")
                self.send_header("Content-Length", str(len(data)))
                self.end_headers()
                self.wfile.write(data)

        self.httpd = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.thread = threading.Thread(target=self.httpd.serve_forever, daemon=True)

    @property
    def url(self) -> str:
        host, port = self.httpd.server_address[:2]
        return f"http://{host}:{port}"

    def kubeconfig(self, token: str | None = None) -> str:
        return json.dumps(
            {
                "apiVersion": "v1",
                "kind": "Config",
                "current-context": "test",
                "clusters": [{"name": "test", "cluster": {"server": self.url}}],
                "users": [{"name": "test", "user": {"token": token or self.token}}],
                "contexts": [{"name": "test", "context": {"cluster": "test", "user": "test"}}],
            }
        )

    def __enter__(self) -> KubeApiServer:
        self.thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self.httpd.shutdown()
        self.httpd.server_close()
        self.thread.join(timeout=5)
