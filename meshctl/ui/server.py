"""`meshctl ui`'s web server: the page, its assets and a small JSON + server-sent-events API.

Bound to 127.0.0.1 only. Flows come from the same stores `meshctl observe` reads, with the same
filters (FlowFilter). A page load makes a view: its filter, the service map of the chosen window,
and the stores' row marks; `/api/events` then follows the stores from those marks in the request's
own thread and sends the changed edges twice a second, so a flood of flows reaches the browser
as a few aggregated messages. Third-party assets (cytoscape) are served from the project's own
install of the npm package (Path(sys.prefix)/web/node_modules), never from the internet.
"""

from __future__ import annotations

import json
import secrets
import sys
import threading
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from http import HTTPStatus
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any
from urllib.parse import parse_qs, urlparse

from meshctl.errors import MeshctlError
from meshctl.flows.filters import FlowFilter, build_filter
from meshctl.flows.store import FlowStore, StoreError, open_stores
from meshctl.ui.graph import Locate, ServiceMap

STATIC = Path(__file__).resolve().parent / "static"
ASSETS = Path(sys.prefix) / "web" / "node_modules"
VENDOR = {"cytoscape.min.js": ASSETS / "cytoscape" / "dist" / "cytoscape.min.js"}
TYPES = {".html": "text/html; charset=utf-8", ".js": "text/javascript; charset=utf-8",
         ".css": "text/css; charset=utf-8", ".json": "application/json"}
PUSH_EVERY_S = 0.5  # at most two messages a second per page, whatever the flow rate
POLL_EVERY_S = 0.2
VIEWS_KEPT = 32
# The page's filter inputs -> FlowFilter fields (observe's flags of the same names).
FILTERS = {"namespace": "namespaces", "pod": "pods", "verdict": "verdicts", "protocol": "protocols"}


class UiError(MeshctlError):
    pass


def check_assets() -> None:
    missing = [str(p) for p in VENDOR.values() if not p.is_file()]
    if missing:
        raise UiError(f"page assets missing ({', '.join(missing)}): run `bash scripts/setup.sh`, "
                      "which installs them from the npm registry into the venv")


@dataclass
class View:
    """One page's filter and service map, and how far it has read each store."""

    flt: FlowFilter
    map: ServiceMap
    marks: dict[str, int] = field(default_factory=dict)
    touched: float = field(default_factory=time.monotonic)


@dataclass
class UiSettings:
    state_dir: Path
    cluster: str
    since: str = "15m"
    trace: Callable[[str, str, int, str], str] | None = None  # (src, dst, port, protocol) -> text
    plan: dict[str, Any] | None = None  # the plan view's changes (meshctl.ui.plan), when asked
    locate: Locate | None = None  # file:line of the rules behind flows (from the repo)


@contextmanager
def _stores(state_dir: Path) -> Iterator[list[FlowStore]]:
    try:
        stores = open_stores(state_dir)
    except StoreError:
        stores = []
    try:
        yield stores
    finally:
        for s in stores:
            s.close()


class UiApp:
    """Everything the handler serves, without HTTP (unit-testable)."""

    def __init__(self, settings: UiSettings) -> None:
        self.settings = settings
        self.views: dict[str, View] = {}
        self._lock = threading.Lock()

    def filter_of(self, query: dict[str, list[str]]) -> FlowFilter:
        values = {name: [v for v in query.get(param, []) if v] for param, name in FILTERS.items()}
        since = (query.get("since") or [self.settings.since])[0] or self.settings.since
        return build_filter(values, since, None)

    def new_view(self, query: dict[str, list[str]]) -> dict[str, Any]:
        """A page load: the window's service map and a view id for its live updates."""
        view = View(self.filter_of(query), ServiceMap(self.settings.locate))
        with _stores(self.settings.state_dir) as stores:
            for s in stores:
                view.marks[str(s.path)] = s.max_rowid()
                view.map.add(f for rowid, f in s.query(view.flt) if rowid <= view.marks[str(s.path)])
            note = "" if stores else f"no flow store under {self.settings.state_dir}: is the lab up?"
        view_id = secrets.token_hex(8)
        with self._lock:
            if len(self.views) >= VIEWS_KEPT:
                oldest = min(self.views, key=lambda k: self.views[k].touched)
                del self.views[oldest]
            self.views[view_id] = view
        since = (query.get("since") or [self.settings.since])[0] or self.settings.since
        return {"view": view_id, "cluster": self.settings.cluster, "note": note, "since": since,
                "plan": self.settings.plan, **view.map.snapshot()}

    def view(self, view_id: str) -> View:
        with self._lock:
            view = self.views.get(view_id)
        if view is None:
            raise KeyError(view_id)
        view.touched = time.monotonic()
        return view

    def poll(self, view: View, stores: list[FlowStore]) -> None:
        """Read the flows stored since the view's marks into its map (observe's filter, in SQL)."""
        for s in stores:
            key = str(s.path)
            mark = view.marks.get(key, 0)
            rows = s.query(view.flt, after_rowid=mark)
            if rows:
                view.marks[key] = rows[-1][0]
                view.map.add(f for _, f in rows)

    def trace(self, query: dict[str, list[str]]) -> str:
        if self.settings.trace is None:
            raise UiError("trace is not available")
        get = {k: (v[0] if v else "") for k, v in query.items()}
        try:
            port = int(get.get("port", ""))
        except ValueError as err:
            raise UiError("trace needs src, dst, port and protocol") from err
        return self.settings.trace(get.get("src", ""), get.get("dst", ""), port, get.get("protocol", "tcp"))


def make_handler(app: UiApp) -> type[BaseHTTPRequestHandler]:
    class Handler(BaseHTTPRequestHandler):
        server_version = "meshctl-ui"

        def log_message(self, fmt: str, *args: Any) -> None:  # quiet: the terminal shows the URL only
            return

        def do_GET(self) -> None:
            url = urlparse(self.path)
            query = parse_qs(url.query)
            try:
                if url.path in ("/", "/index.html"):
                    self._file(STATIC / "index.html")
                elif url.path.startswith("/static/"):
                    self._file(STATIC / Path(url.path).name)
                elif url.path.startswith("/vendor/") and Path(url.path).name in VENDOR:
                    self._file(VENDOR[Path(url.path).name])
                elif url.path == "/api/graph":
                    self._json(app.new_view(query))
                elif url.path == "/api/edge":
                    view = app.view(query.get("view", [""])[0])
                    detail = view.map.detail(query.get("id", [""])[0])
                    if detail is None:
                        self._json({"error": "no such edge"}, HTTPStatus.NOT_FOUND)
                    else:
                        self._json(detail)
                elif url.path == "/api/trace":
                    self._json({"text": app.trace(query)})
                elif url.path == "/api/events":
                    self._events(app.view(query.get("view", [""])[0]))
                else:
                    self._json({"error": "not found"}, HTTPStatus.NOT_FOUND)
            except KeyError:
                self._json({"error": "unknown view: reload the page"}, HTTPStatus.GONE)
            except MeshctlError as err:
                self._json({"error": str(err)}, HTTPStatus.BAD_REQUEST)
            except (BrokenPipeError, ConnectionResetError):
                return

        def _file(self, path: Path) -> None:
            if not path.is_file():
                self._json({"error": "not found"}, HTTPStatus.NOT_FOUND)
                return
            body = path.read_bytes()
            self.send_response(HTTPStatus.OK)
            self.send_header("Content-Type", TYPES.get(path.suffix, "application/octet-stream"))
            self.send_header("Content-Length", str(len(body)))
            self.end_headers()
            self.wfile.write(body)

        def _json(self, value: Any, status: HTTPStatus = HTTPStatus.OK) -> None:
            body = json.dumps(value).encode()
            self.send_response(status)
            self.send_header("Content-Type", "application/json")
            self.send_header("Cache-Control", "no-store")
            self.send_header("Content-Length", str(len(body)))
            self.end_headers()
            self.wfile.write(body)

        def _events(self, view: View) -> None:
            """Server-sent events: the view's changed nodes and edges, at most every PUSH_EVERY_S."""
            self.send_response(HTTPStatus.OK)
            self.send_header("Content-Type", "text/event-stream")
            self.send_header("Cache-Control", "no-store")
            self.end_headers()
            with _stores(app.settings.state_dir) as stores:
                last_push = time.monotonic()
                while True:
                    app.poll(view, stores)
                    now = time.monotonic()
                    if now - last_push >= PUSH_EVERY_S:
                        changes = view.map.take_changes()
                        message = f"data: {json.dumps(changes)}\n\n" if changes else ": keep-alive\n\n"
                        self.wfile.write(message.encode())
                        self.wfile.flush()
                        last_push = now
                    time.sleep(POLL_EVERY_S)

    return Handler


def make_server(app: UiApp, port: int) -> ThreadingHTTPServer:
    """The server on 127.0.0.1:`port` (0: any free port), not yet serving."""
    server = ThreadingHTTPServer(("127.0.0.1", port), make_handler(app))
    server.daemon_threads = True
    return server


def serve(app: UiApp, port: int, ready: Callable[[str], None] | None = None) -> None:
    """Serve until interrupted (Ctrl-C)."""
    server = make_server(app, port)
    url = f"http://127.0.0.1:{server.server_address[1]}/"
    if ready is not None:
        ready(url)
    try:
        server.serve_forever(poll_interval=0.2)
    finally:
        server.server_close()
