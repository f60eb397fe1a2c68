"""L7 HTTP policy end to end on a three-tier lab: git commit, plan, apply, real requests.

The frontend (node-1) reaches the api (node-2) through node-2's Envoy: the datapath hands the
connection to the proxy at node-2's underlay device (bpf/lib/proxy.h), Envoy judges each request
with the RBAC made from the CNP, and its upstream connection keeps the frontend's address.
"""

from __future__ import annotations

import contextlib
import json
import os
import shutil
import signal
import socket
import subprocess
import time
from collections.abc import Iterator
from pathlib import Path

import pytest

from meshctl.dataplane.envoy import ProxyFiles, running_http
from meshctl.dataplane.netns import in_netns
from meshctl.lab import agents, registry
from meshctl.proxy.supervisor import envoy_pid
from tests.privileged.apply_helpers import REPO, cli_lab, git_init, meshctl, three_tier_copy, unique_cluster

pytestmark = [pytest.mark.privileged, pytest.mark.lab]

GET_ONLY = """\
apiVersion: cilium.io/v2
kind: CiliumNetworkPolicy
metadata:
  name: api-from-frontend
  namespace: demo
spec:
  description: "api accepts only GET requests from the frontend on 3000/TCP"
  endpointSelector:
    matchLabels: {app: api}
  ingress:
    - fromEndpoints:
        - matchLabels: {app: frontend}
      toPorts:
        - ports:
            - {port: "3000", protocol: TCP}
          rules:
            http:
              - method: GET
---
"""

# The seed's api-http-policy: three request shapes, anything else denied.
API_HTTP_POLICY = REPO / "examples" / "l7-changes" / "frontend-to-api.yaml"

JSON = {"Content-Type": "application/json"}
# (method, path, headers, expected status): the three rules' edges (method, case, anchoring of
# path regexes at both ends, the query string as part of the path, exact header values).
REQUESTS: list[tuple[str, str, dict[str, str], int]] = [
    ("GET", "/api/v1/products", {}, 200),
    ("GET", "/api/v1/products/", {}, 200),
    ("GET", "/api/v1/products/42", {}, 200),
    ("GET", "/api/v1/products?page=2", {}, 200),
    ("GET", "/api/v1/productsXYZ", {}, 200),
    ("GET", "/api/v1/product", {}, 403),
    ("GET", "/API/v1/products", {}, 403),
    ("GET", "/v2/api/v1/products", {}, 403),
    ("GET", "//api/v1/products", {}, 403),
    ("HEAD", "/api/v1/products", {}, 403),
    ("POST", "/api/v1/products", JSON, 403),
    ("PUT", "/api/v1/products", {}, 403),
    ("DELETE", "/api/v1/products/1", {}, 403),
    ("OPTIONS", "/api/v1/products", {}, 403),
    ("GET", "/api/v1/users/42", {}, 200),
    ("GET", "/api/v1/users/0", {}, 200),
    ("GET", "/api/v1/users/1234567890", {}, 200),
    ("GET", "/api/v1/users/", {}, 403),
    ("GET", "/api/v1/users", {}, 403),
    ("GET", "/api/v1/users/abc", {}, 403),
    ("GET", "/api/v1/users/42/orders", {}, 403),
    ("GET", "/api/v1/users/42?expand=1", {}, 403),
    ("GET", "/api/v1/users/-1", {}, 403),
    ("POST", "/api/v1/users/42", JSON, 403),
    ("POST", "/api/v1/orders", JSON, 200),
    ("POST", "/api/v1/orders", {"content-type": "application/json"}, 200),
    ("POST", "/api/v1/orders", {}, 403),
    ("POST", "/api/v1/orders", {"Content-Type": "text/plain"}, 403),
    ("POST", "/api/v1/orders", {"Content-Type": "application/json; charset=utf-8"}, 403),
    ("POST", "/api/v1/orders/1", JSON, 403),
    ("POST", "/api/v1/Orders", JSON, 403),
    ("GET", "/api/v1/orders", JSON, 403),
    ("PUT", "/api/v1/orders", JSON, 403),
    ("PATCH", "/api/v1/orders", JSON, 403),
]


@pytest.fixture(scope="module")
def lab(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Path]:
    root = three_tier_copy(tmp_path_factory.mktemp("l7") / "repo", unique_cluster("t-l7"))
    git_init(root, "three-tier at L4")
    with cli_lab(root):
        done = meshctl(root, "apply", "--auto-approve", timeout=180)
        assert done.returncode == 0, done.stdout + done.stderr
        yield root


def _cluster(root: Path) -> str:
    from meshctl.lab.repo import cluster_of

    return cluster_of(root)[0]


class Client:
    """One keep-alive HTTP/1.1 connection from a pod's netns, raw: every status is seen as sent."""

    def __init__(self, cluster: str, src: str, dst: str, port: int) -> None:
        reg = registry.require(cluster)
        with in_netns(reg.pods[src].netns):
            self.sock = socket.create_connection((str(reg.pods[dst].address), port), timeout=3)
        self.buf = b""

    def request(self, method: str, path: str, headers: dict[str, str] | None = None,
                body: bytes = b"") -> tuple[int, str]:
        head = [f"{method} {path} HTTP/1.1", "Host: api", f"Content-Length: {len(body)}"]
        head += [f"{k}: {v}" for k, v in (headers or {}).items()]
        self.sock.sendall(("\r\n".join(head) + "\r\n\r\n").encode() + body)
        while b"\r\n\r\n" not in self.buf:
            self._fill()
        raw, _, self.buf = self.buf.partition(b"\r\n\r\n")
        lines = raw.decode().split("\r\n")
        fields = {k.lower(): v.strip() for k, _, v in (ln.partition(":") for ln in lines[1:])}
        length = 0 if method == "HEAD" else int(fields.get("content-length", "0"))
        while len(self.buf) < length:
            self._fill()
        text, self.buf = self.buf[:length].decode(), self.buf[length:]
        self.closing = fields.get("connection", "").lower() == "close"
        return int(lines[0].split()[1]), text

    def _fill(self) -> None:
        chunk = self.sock.recv(65536)
        assert chunk, "the connection closed"
        self.buf += chunk

    def close(self) -> None:
        self.sock.close()


@contextlib.contextmanager
def client(root: Path) -> Iterator[Client]:
    c = Client(_cluster(root), "demo/frontend", "demo/api", 3000)
    try:
        yield c
    finally:
        c.close()


def _commit(root: Path, policy: str | None, message: str) -> None:
    """Commit `policy` as the api's ingress policy (None: the file as it is)."""
    import git

    if policy is not None:
        path = root / "policies" / "frontend-to-api.yaml"
        first, sep, rest = path.read_text().partition("---\n")
        assert sep and "name: api-from-frontend" in first
        path.write_text(policy + rest)
    repo = git.Repo(root)
    repo.git.add(A=True)
    repo.index.commit(message)


def _access_log(root: Path, node: str, paths: set[str]) -> dict[str, dict[str, str]]:
    """The last access log row of each of `paths` (Envoy flushes its log every second)."""
    log = ProxyFiles.of(_cluster(root), node).access_log
    deadline = time.monotonic() + 10
    while True:
        rows = {r["path"]: r for r in map(json.loads, log.read_text().splitlines())}
        if paths <= set(rows) or time.monotonic() > deadline:
            return rows
        time.sleep(0.2)


def test_get_passes_post_is_denied_the_gitops_way_and_revert_restores_l4(lab: Path) -> None:
    import git

    with client(lab) as c:  # at L4 every request passes
        assert c.request("POST", "/api/v1/orders")[0] == 200
    _commit(lab, GET_ONLY, "api: the frontend may only GET")

    plan = meshctl(lab, "plan", timeout=120)
    assert plan.returncode == 0, plan.stderr
    assert "+ node-2 http demo/api:3000 ingress from demo/frontend" in plan.stdout
    assert "proxy_port: 0 -> 15001" in plan.stdout and "# the proxy allows GET *" in plan.stdout
    assert 'rules = [{"method": "GET"}]' in plan.stdout

    done = meshctl(lab, "apply", "--auto-approve", timeout=180)
    assert done.returncode == 0, done.stdout + done.stderr
    cluster = _cluster(lab)
    assert {p.rules[0].method for p in running_http(ProxyFiles.of(cluster, "node-2"))} == {"GET"}

    with client(lab) as c:  # one keep-alive connection: a denied request leaves it usable
        status, body = c.request("GET", "/api/v1/users")
        assert status == 200 and body.splitlines() == ["demo/api:3000", "GET /api/v1/users"]
        assert c.request("POST", "/api/v1/orders") == (403, "Access denied")
        assert not c.closing
        assert c.request("GET", "/again")[0] == 200
    by_path = _access_log(lab, "node-2", {"/api/v1/users", "/api/v1/orders"})
    assert by_path["/api/v1/users"]["rbac"] == "allowed"
    assert by_path["/api/v1/users"]["policy"].startswith("cookie=")
    assert by_path["/api/v1/orders"]["status"] == 403 and by_path["/api/v1/orders"]["rbac"] == "denied"
    frontend = registry.require(cluster).pods["demo/frontend"].address
    assert by_path["/api/v1/users"]["client"].startswith(f"{frontend}:")  # the original client

    repo = git.Repo(lab)
    repo.git.revert("HEAD", no_edit=True)
    done = meshctl(lab, "apply", "--auto-approve", timeout=180)
    assert done.returncode == 0, done.stdout + done.stderr
    assert running_http(ProxyFiles.of(cluster, "node-2")) == frozenset()
    with client(lab) as c:
        assert c.request("POST", "/api/v1/orders")[0] == 200


def test_the_seed_api_http_policy_against_a_table_of_requests(lab: Path) -> None:
    shutil.copy(API_HTTP_POLICY, lab / "policies" / "frontend-to-api.yaml")
    _commit(lab, None, "api: the seed's api-http-policy (examples/l7-changes)")
    done = meshctl(lab, "apply", "--auto-approve", timeout=180)
    assert done.returncode == 0, done.stdout + done.stderr
    got = []
    c = Client(_cluster(lab), "demo/frontend", "demo/api", 3000)
    for method, path, headers, _ in REQUESTS:
        got.append((method, path, headers, c.request(method, path, headers, b"{}" if headers else b"")[0]))
        if c.closing:  # Envoy closes after denying a request whose body it did not read
            c.close()
            c = Client(_cluster(lab), "demo/frontend", "demo/api", 3000)
    c.close()
    assert got == REQUESTS


def _listening(netns: str, port: int) -> bool:
    out = subprocess.run(["ip", "netns", "exec", netns, "ss", "-Hltn", f"sport = :{port}"],
                         capture_output=True, text=True, check=True).stdout
    return bool(out.strip())


def test_a_dead_proxy_fails_closed_and_its_agent_starts_it_again(lab: Path) -> None:
    cluster = _cluster(lab)
    files = ProxyFiles.of(cluster, "node-2")
    _commit(lab, GET_ONLY, "api: GET only again")
    done = meshctl(lab, "apply", "--auto-approve", timeout=180)
    assert done.returncode == 0, done.stdout + done.stderr
    agent = agents.running(cluster)["node-2"]
    pid = envoy_pid(files)
    assert pid is not None
    os.kill(agent, signal.SIGSTOP)  # hold the supervisor: the window stays open until we look
    try:
        os.kill(pid, signal.SIGKILL)
        deadline = time.monotonic() + 5
        netns = registry.require(cluster).nodes["node-2"].netns
        while _listening(netns, 15001) and time.monotonic() < deadline:  # every thread gone: closed
            time.sleep(0.02)
        with pytest.raises(OSError):  # no listener: the datapath drops the SYN, nothing passes
            Client(cluster, "demo/frontend", "demo/api", 3000).request("GET", "/")
    finally:
        os.kill(agent, signal.SIGCONT)
    deadline = time.monotonic() + 20
    while running_http(files) == frozenset() and time.monotonic() < deadline:
        time.sleep(0.1)
    assert envoy_pid(files) not in (None, pid)
    with client(lab) as c:
        assert c.request("GET", "/")[0] == 200
        assert c.request("POST", "/")[0] == 403
    deadline = time.monotonic() + 15  # the agent stores what its node recorded while it was held
    while True:
        observed = meshctl(lab, "observe", "--verdict", "DROPPED", "--from-pod", "demo/frontend", "--to-pod",
                           "demo/api", "-o", "json", timeout=60)
        assert observed.returncode == 0, observed.stderr
        drops = [json.loads(line) for line in observed.stdout.splitlines()]
        if any(d["drop_reason"] == "L7 proxy down" and d["dst_port"] == 3000 and d["node"] == "node-2"
               for d in drops):
            break
        assert time.monotonic() < deadline, observed.stdout
        time.sleep(0.5)


def test_plan_refuses_a_regex_envoy_cannot_run_naming_the_rule(lab: Path) -> None:
    import git

    lookahead = GET_ONLY.replace("- method: GET", '- method: GET\n                path: "/users/(?=admin)"')
    _commit(lab, lookahead, "api: a lookahead RE2 does not have")
    plan = meshctl(lab, "plan", timeout=120)
    git.Repo(lab).git.revert("HEAD", no_edit=True)
    assert plan.returncode == 1 and "Traceback" not in plan.stderr
    rule = "policies/frontend-to-api.yaml:11: CiliumNetworkPolicy demo/api-from-frontend ingress[0]"
    assert rule in plan.stderr
    assert "'/users/(?=admin)'" in plan.stderr and "invalid perl operator: (?=" in plan.stderr
