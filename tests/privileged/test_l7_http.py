"""L7 HTTP policy end to end on a three-tier lab: git commit, plan, apply, real requests.

The frontend (node-1) reaches the api (node-2) through node-2's Envoy: the datapath hands the
connection to the proxy at node-2's underlay device (bpf/lib/proxy.h), Envoy judges each request
with the RBAC made from the CNP, and its upstream connection keeps the frontend's address.
"""

from __future__ import annotations

import contextlib
import json
import os
import re
import shutil
import signal
import socket
import subprocess
import time
import urllib.request
from collections.abc import Iterator
from pathlib import Path

import pytest

from meshctl.dataplane.envoy import ProxyFiles, running_http
from meshctl.dataplane.netns import in_netns
from meshctl.lab import agents, registry
from meshctl.proxy.supervisor import envoy_pid
from tests.l7_requests import REQUESTS
from tests.privileged.apply_helpers import REPO, cli_lab, example_copy, git_init, meshctl, unique_cluster

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

@pytest.fixture(scope="module")
def lab(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Path]:
    root = example_copy("three-tier", tmp_path_factory.mktemp("l7") / "repo", unique_cluster("t-l7"),
                        metrics_base_port=_free_port())
    git_init(root, "three-tier at L4")
    with cli_lab(root):
        done = meshctl(root, "apply", "--auto-approve", timeout=180)
        assert done.returncode == 0, done.stdout + done.stderr
        yield root


def _free_port() -> int:
    """A free port with two after it (node-1..3 serve /metrics on base + 0..2)."""
    while True:
        with socket.socket() as s:
            s.bind(("127.0.0.1", 0))
            base = s.getsockname()[1]
        if base < 65000:
            return base


def _http_flows(root: Path, want: int, *filters: str) -> list[dict[str, object]]:
    """`meshctl observe --protocol http` as JSON, once it shows `want` records (Envoy writes its
    log within 0.2 s, the agent reads it every 0.25 s)."""
    deadline = time.monotonic() + 15
    while True:
        shown = meshctl(root, "observe", "--protocol", "http", "--to-pod", "demo/api", "--since", "5m",
                        *filters, "-o", "json", timeout=60)
        assert shown.returncode == 0, shown.stderr
        flows = [json.loads(line) for line in shown.stdout.splitlines()]
        if len(flows) >= want or time.monotonic() > deadline:
            return flows
        time.sleep(0.3)


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
    # the flows show both requests, with the rule that allowed GET and the one POST failed
    flows = _http_flows(lab, 6, "--not", "--http-path", "^/$")  # apply's verify probes GET /
    seen = [(f["l7"]["type"], f["verdict"], f["l7"]["http"]["method"], f["l7"]["http"]["url"],
             f["l7"]["http"].get("code")) for f in flows]
    assert seen == [("REQUEST", "FORWARDED", "GET", "/api/v1/users", None),
                    ("RESPONSE", "FORWARDED", "GET", "/api/v1/users", 200),
                    ("REQUEST", "DROPPED", "POST", "/api/v1/orders", None),
                    ("RESPONSE", "DROPPED", "POST", "/api/v1/orders", 403),
                    ("REQUEST", "FORWARDED", "GET", "/again", None),
                    ("RESPONSE", "FORWARDED", "GET", "/again", 200)], seen
    rule = "CiliumNetworkPolicy demo/api-from-frontend ingress[0]"
    assert flows[0]["policy"] == f"{rule} rules.http[0] (policies/frontend-to-api.yaml:11)"
    assert flows[2]["drop_reason"] == f"no L7 rule of {rule} (policies/frontend-to-api.yaml:11) matches"
    assert (flows[0]["src_pod"], flows[0]["dst_pod"], flows[0]["dst_port"], flows[0]["node"]) == (
        "demo/frontend", "demo/api", 3000, "node-2")
    compact = meshctl(lab, "observe", "--protocol", "http", "--http-method", "POST", "--since", "5m",
                      timeout=60).stdout.splitlines()
    assert compact[0].endswith(f"demo/api:3000 (ID:{flows[2]['dst_identity']}) http-request DROPPED "
                               f"(HTTP/1.1 POST /api/v1/orders): {flows[2]['drop_reason']}"), compact
    assert "http-response DROPPED (HTTP/1.1 403 0ms (POST /api/v1/orders))" in compact[1]
    assert [f["l7"]["http"]["code"] for f in _http_flows(lab, 1, "--http-status", "4+")] == [403]
    base = int(re.search(r"metricsBasePort = (\d+)", (lab / "meshctl.toml").read_text()).group(1))  # type: ignore[union-attr]
    metrics = urllib.request.urlopen(f"http://127.0.0.1:{base + 1}/metrics", timeout=5).read().decode()
    gets = sum(1 for f in _http_flows(lab, 6, "--http-method", "GET") if f["l7"]["type"] == "REQUEST")
    assert gets >= 2  # with apply's probes
    server = 'method="GET",protocol="HTTP/1.1",reporter="server"'
    assert f"meshctl_http_requests_total{{{server}}} {gets}.0" in metrics
    assert 'meshctl_http_responses_total{method="POST",reporter="server",status="403"} 1.0' in metrics
    duration = 'meshctl_http_request_duration_seconds_count{method="GET",reporter="server"}'
    assert f"{duration} {gets}.0" in metrics
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
