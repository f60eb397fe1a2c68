"""L7 in `meshctl impact`: request shapes that start or stop passing between two git revisions,
and recorded HTTP requests replayed through both."""

from __future__ import annotations

import shutil
from pathlib import Path

import git
import pytest

from meshctl.flows.flow import L7_REQUEST, L7_RESPONSE, Flow
from meshctl.impact import compare_revisions
from meshctl.impact.render import render_markdown, render_text

EXAMPLES = Path(__file__).resolve().parents[3] / "examples"
GET_ONLY = """\
apiVersion: cilium.io/v2
kind: CiliumNetworkPolicy
metadata: {name: api-from-frontend, namespace: demo}
spec:
  endpointSelector: {matchLabels: {app: api}}
  ingress:
    - fromEndpoints: [{matchLabels: {app: frontend}}]
      toPorts:
        - ports: [{port: "3000", protocol: TCP}]
          rules:
            http: [{method: GET}]
"""


@pytest.fixture(scope="module")
def repo(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """main: the three-tier demo at L4; `l7`: the seed's api-http-policy; `get-only`: GET only."""
    root = tmp_path_factory.mktemp("impact-http") / "three-tier"
    shutil.copytree(EXAMPLES / "three-tier", root, ignore=shutil.ignore_patterns("state", "plans"))
    repo = git.Repo.init(root, initial_branch="main")
    with repo.config_writer() as cw:
        cw.set_value("user", "name", "t").set_value("user", "email", "t@example.invalid")
    repo.git.add(A=True)
    repo.index.commit("three-tier at L4")
    policy = root / "policies" / "frontend-to-api.yaml"
    repo.git.checkout("-b", "l7")
    shutil.copy(EXAMPLES / "l7-changes" / "frontend-to-api.yaml", policy)
    repo.git.add(A=True)
    repo.index.commit("the seed's api-http-policy")
    repo.git.checkout("-b", "get-only")
    _, _, rest = policy.read_text().partition("---\n")
    policy.write_text(GET_ONLY + "---\n" + rest)
    repo.git.add(A=True)
    repo.index.commit("GET only")
    repo.git.checkout("main")
    return root


def _request(method: str, url: str, verdict: int = 1, t: int = 1) -> Flow:
    return Flow(time_ns=t, node="node-2", verdict=verdict, reason=0, direction=0, protocol=6,
                src_ip="10.101.1.10", dst_ip="10.101.2.10", src_port=40000, dst_port=3000, src_identity=0,
                dst_identity=0, src_pod="demo/frontend", dst_pod="demo/api", l7=L7_REQUEST,
                http_method=method, http_url=url, http_protocol="HTTP/1.1")


def test_adding_l7_rules_stops_every_other_request_shape(repo: Path) -> None:
    report, _ = compare_revisions(repo, "main", "l7", use_lab=False)
    assert report.pairs == ()  # L4 does not move: the change is all L7
    (change,) = report.http
    assert (change.src, change.dst, change.port, change.side) == (
        "demo/frontend", "demo/api", 3000, "ingress")
    assert change.base == ("every request",)
    assert change.head == ("GET /api/v1/products.*", "GET /api/v1/users/[0-9]+",
                           "POST /api/v1/orders Content-Type: application/json")
    text = render_text(report)
    assert "1 L7 port(s) change which HTTP requests pass" in text
    assert "stop passing: every request that matches none of the head's shapes" in text
    back, _ = compare_revisions(repo, "l7", "main", use_lab=False)
    assert "start passing: every request that matches none of the base's shapes" in render_text(back)


def test_narrowing_rules_lists_the_shapes_that_start_and_stop(repo: Path) -> None:
    report, _ = compare_revisions(repo, "l7", "get-only", use_lab=False)
    (change,) = report.http
    assert change.starts == ("GET *",)
    assert change.stops == ("GET /api/v1/products.*", "GET /api/v1/users/[0-9]+",
                            "POST /api/v1/orders Content-Type: application/json")
    md = render_markdown(report)
    assert md.startswith("<!-- meshctl-impact -->\n### ⚠️")
    assert "| `demo/frontend` | `demo/api` | 3000/tcp |" in md


def test_recorded_requests_are_replayed_through_both_revisions(repo: Path) -> None:
    flows = [_request("GET", "/api/v1/users/42", t=i) for i in range(3)]
    flows += [_request("DELETE", "/api/v1/users/42", t=10), _request("GET", "/healthz", t=11)]
    flows += [_request("POST", "/api/v1/orders", t=12)]
    flows.append(Flow(**{**flows[0].__dict__, "l7": L7_RESPONSE, "http_status": 200, "time_ns": 13}))
    report, _ = compare_revisions(repo, "main", "l7", flows=flows, use_lab=False)
    assert report.replay is not None and report.replay.requests_seen == 6  # responses are not requests
    changed = {(q.method, q.url, q.count, q.base, q.head) for q in report.replay.requests}
    assert changed == {("DELETE", "/api/v1/users/42", 1, "FORWARDED", "DROPPED"),
                       ("GET", "/healthz", 1, "FORWARDED", "DROPPED"),
                       ("POST", "/api/v1/orders", 1, "FORWARDED", "DROPPED")}  # recorded without headers
    assert report.replay.flows_seen == 0  # HTTP records are not replayed as connections
    line = "HTTP replay: 3 recorded request(s) would be DROPPED, 0 newly FORWARDED (6 replayed"
    assert line in render_text(report)
    back, _ = compare_revisions(repo, "get-only", "l7", flows=flows, use_lab=False)
    assert {(q.method, q.url, q.head) for q in back.replay.requests} == {  # type: ignore[union-attr]
        ("GET", "/healthz", "DROPPED")}
