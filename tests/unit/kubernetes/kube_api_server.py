"""A small real HTTP server speaking the Kubernetes list and watch API (JSON, limit + continue).

Not a cluster: it serves Namespaces, Pods, Services and Nodes so the real kubernetes client can
be exercised over real HTTP with real pagination. It checks the bearer token and records every
request so tests can assert the pages asked for. Objects change through `put` and `delete`,
each a numbered event; `?watch=true&resourceVersion=N` streams the events after N (newline-
delimited JSON, as the API server does) and, once `compact()` dropped them, answers with the
ERROR event of a 410 Gone. CiliumIdentity objects can be listed and created (409 on a name in
use), as Cilium's CRD identity allocation needs.
"""

from __future__ import annotations

import base64
import json
import threading
import time
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any
from urllib.parse import parse_qs, urlparse

KINDS = {"namespaces": "NamespaceList", "pods": "PodList", "services": "ServiceList", "nodes": "NodeList"}
IDENTITIES = "/apis/cilium.io/v2/ciliumidentities"


def key_of(obj: dict[str, Any]) -> str:
    meta = obj.get("metadata") or {}
    return f"{meta.get('namespace', '')}/{meta.get('name')}"


class KubeApiServer:
    def __init__(self, objects: dict[str, list[dict[str, Any]]], token: str = "t0ken") -> None:
        self.objects, self.token = objects, token
        self.requests: list[tuple[str, dict[str, list[str]]]] = []
        self.expire_continue = False
        self.version = 1  # the resourceVersion of the last change
        self.events: list[tuple[int, str, str, dict[str, Any]]] = []  # (version, resource, type, object)
        self.compacted = 0  # events up to this version are gone: a watch from before gets 410
        self.identities: dict[str, dict[str, Any]] = {}
        self.creates: list[tuple[str, int]] = []  # CiliumIdentity POSTs: (name, status answered)
        self.held = threading.Event()  # set: watches get no events (a client that fell behind)
        self.changed = threading.Condition()
        outer = self

        class Handler(BaseHTTPRequestHandler):
            def log_message(self, *args: object) -> None:
                pass

            def _authorized(self) -> bool:
                if self.headers.get("Authorization") == f"Bearer {outer.token}":
                    return True
                self._send(401, {"kind": "Status", "status": "Failure", "code": 401,
                                 "reason": "Unauthorized"})
                return False

            def do_POST(self) -> None:
                url = urlparse(self.path)
                outer.requests.append((url.path, {}))
                if not self._authorized():
                    return None
                if url.path != IDENTITIES:
                    return self._send(404, {"kind": "Status", "code": 404, "reason": "NotFound"})
                body = json.loads(self.rfile.read(int(self.headers.get("Content-Length") or 0)))
                name = body["metadata"]["name"]
                with outer.changed:
                    if name in outer.identities:
                        outer.creates.append((name, 409))
                        return self._send(409, {"kind": "Status", "code": 409, "reason": "AlreadyExists"})
                    outer.identities[name] = body
                    outer.creates.append((name, 201))
                return self._send(201, body)

            def do_GET(self) -> None:
                url = urlparse(self.path)
                query = parse_qs(url.query)
                outer.requests.append((url.path, query))
                if not self._authorized():
                    return None
                if url.path == IDENTITIES:
                    with outer.changed:
                        items = list(outer.identities.values())
                    meta = {"resourceVersion": str(outer.version)}
                    return self._send(200, {"kind": "CiliumIdentityList", "apiVersion": "cilium.io/v2",
                                            "metadata": meta, "items": items})
                resource = url.path.removeprefix("/api/v1/")
                if resource not in KINDS:
                    return self._send(404, {"kind": "Status", "code": 404, "reason": "NotFound"})
                if query.get("watch") == ["true"]:
                    return self._watch(resource, int(query.get("resourceVersion", ["0"])[0] or 0),
                                       float(query.get("timeoutSeconds", ["5"])[0]))
                if outer.expire_continue and "continue" in query:
                    return self._send(410, {"kind": "Status", "code": 410, "reason": "Expired"})
                items = outer.objects.get(resource, [])
                start = int(base64.b64decode(query["continue"][0])) if "continue" in query else 0
                limit = int(query.get("limit", [0])[0]) or len(items)
                page = items[start : start + limit]
                meta: dict[str, Any] = {"resourceVersion": str(outer.version)}
                if start + limit < len(items):
                    meta["continue"] = base64.b64encode(str(start + limit).encode()).decode()
                self._send(
                    200, {"kind": KINDS[resource], "apiVersion": "v1", "metadata": meta, "items": page}
                )

            def _watch(self, resource: str, since: int, timeout: float) -> None:
                self.send_response(200)
                self.send_header("Content-Type", "application/json")
                self.send_header("Transfer-Encoding", "chunked")
                self.end_headers()
                if since < outer.compacted:
                    gone = {"kind": "Status", "status": "Failure", "code": 410, "reason": "Expired",
                            "message": f"too old resource version: {since} ({outer.compacted})"}
                    self._chunk({"type": "ERROR", "object": gone})
                    return self._chunk(None)
                deadline = time.monotonic() + timeout
                sent = since
                while True:
                    with outer.changed:
                        pending = [e for e in outer.events if e[0] > sent and e[1] == resource
                                   and not outer.held.is_set()]
                        if not pending:
                            left = deadline - time.monotonic()
                            if left <= 0:
                                break
                            outer.changed.wait(min(left, 0.05))
                            continue
                    for version, _res, kind, obj in pending:
                        self._chunk({"type": kind, "object": obj})
                        sent = version
                self._chunk(None)

            def _chunk(self, event: dict[str, Any] | None) -> None:
                data = (json.dumps(event) + "\n").encode() if event is not None else b""
                self.wfile.write(f"{len(data):x}\r\n".encode() + data + b"\r\n")
                self.wfile.flush()

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

    def put(self, resource: str, obj: dict[str, Any]) -> int:
        """Add or replace an object (by namespace/name): an ADDED or MODIFIED event."""
        with self.changed:
            self.version += 1
            obj = json.loads(json.dumps(obj))
            obj.setdefault("metadata", {})["resourceVersion"] = str(self.version)
            items = self.objects.setdefault(resource, [])
            index = next((i for i, o in enumerate(items) if key_of(o) == key_of(obj)), None)
            kind = "ADDED" if index is None else "MODIFIED"
            if index is None:
                items.append(obj)
            else:
                items[index] = obj
            self.events.append((self.version, resource, kind, obj))
            self.changed.notify_all()
            return self.version

    def delete(self, resource: str, key: str) -> int:
        """Remove the object "namespace/name" ("/name" for cluster objects): a DELETED event."""
        with self.changed:
            items = self.objects.get(resource, [])
            obj = next(o for o in items if key_of(o) == key)
            items.remove(obj)
            self.version += 1
            self.events.append((self.version, resource, "DELETED", obj))
            self.changed.notify_all()
            return self.version

    def compact(self) -> None:
        """Forget every event so far, as etcd compaction does: older watches get 410 Gone."""
        with self.changed:
            self.compacted = self.version
            self.events = []

    def __enter__(self) -> KubeApiServer:
        self.thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self.httpd.shutdown()
        self.httpd.server_close()
        self.thread.join(timeout=5)
