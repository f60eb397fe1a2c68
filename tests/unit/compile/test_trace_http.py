"""`policy trace --http`: the L7 proxy's verdict from the compiled rules (meshctl.httpverdicts).

The same table of requests goes through the node's real Envoy in tests/privileged/test_l7_http.py,
so the evaluator and Envoy agree on every one of them.
"""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import pytest

from meshctl.cli.policy import load_for_trace
from meshctl.compile.trace import Tracer
from meshctl.httpverdicts import HttpRequest
from tests.climain import call
from tests.l7_requests import REQUESTS

EXAMPLES = Path(__file__).resolve().parents[3] / "examples"


@pytest.fixture(scope="module")
def repo(tmp_path_factory: pytest.TempPathFactory) -> Path:
    root = tmp_path_factory.mktemp("l7") / "three-tier"
    shutil.copytree(EXAMPLES / "three-tier", root, ignore=shutil.ignore_patterns("state", ".meshctl"))
    shutil.copy(EXAMPLES / "l7-changes" / "frontend-to-api.yaml", root / "policies" / "frontend-to-api.yaml")
    return root


@pytest.fixture(scope="module")
def tracer(repo: Path) -> Tracer:
    return Tracer(load_for_trace(repo, None, None))


@pytest.mark.parametrize(("method", "path", "headers", "status"), REQUESTS)
def test_the_seeds_api_http_policy_request_by_request(tracer: Tracer, method: str, path: str,
                                                      headers: dict[str, str], status: int) -> None:
    request = HttpRequest.parse(f"{method} {path}", [f"{k}: {v}" for k, v in headers.items()])
    t = tracer.trace("demo/frontend", "demo/api", 3000, 6, request)
    assert t.egress.http is None  # the frontend's egress rule has no L7 part
    assert t.ingress.http is not None and t.ingress.http.as_dict()["status"] == status
    assert t.allowed == (status == 200)


def test_the_trace_names_the_rule_with_its_line_or_the_rules_a_request_failed(tracer: Tracer) -> None:
    ok = tracer.trace("demo/frontend", "demo/api", 3000, 6, HttpRequest.parse("GET /api/v1/users/42"))
    text = ok.text()
    assert text.splitlines()[0] == "frontend -> api:3000/TCP GET /api/v1/users/42 FORWARDED"
    assert ("  L7 ingress demo/api: GET /api/v1/users/42 ALLOWED by CiliumNetworkPolicy "
            "demo/api-from-frontend ingress[0] rules.http[1] (policies/frontend-to-api.yaml:14)") in text
    denied = tracer.trace("demo/frontend", "demo/api", 3000, 6, HttpRequest.parse("POST /api/v1/orders"))
    assert not denied.allowed
    assert ("POST /api/v1/orders DENIED (403 Access denied): no L7 rule of CiliumNetworkPolicy "
            "demo/api-from-frontend ingress[0] (policies/frontend-to-api.yaml:14) matches") in denied.text()
    plain = tracer.trace("demo/api", "demo/database", 5432, 6, HttpRequest.parse("GET /"))
    assert plain.allowed and "5432/TCP is not an L7 port at either end" in plain.text()
    with pytest.raises(Exception, match="HTTP rules apply to TCP ports only"):
        tracer.trace("demo/frontend", "demo/api", 3000, 17, HttpRequest.parse("GET /"))


def test_the_cli_takes_headers_and_refuses_a_bad_request_line(
        repo: Path, capsys: pytest.CaptureFixture[str]) -> None:
    base = ("-C", str(repo), "--from", "demo/frontend", "--to", "demo/api", "--port", "3000")
    code, out, _ = call(capsys, "policy", "trace", *base, "--http", "POST /api/v1/orders", "--header",
                        "Content-Type: application/json", "-o", "json")
    assert code == 0
    t = json.loads(out)
    assert t["allowed"] and t["ingress"]["http"]["rule"] == 2
    assert t["http"]["headers"] == ["content-type: application/json"]
    for args, message in ((("--http", "GET"), "--http 'GET': expected METHOD /path"),
                          (("--http", "GET /", "--header", "nocolon"), "--header 'nocolon': expected"),
                          (("--header", "A: b"), "--header needs --http")):
        code, _, err = call(capsys, "policy", "trace", *base, *args)
        assert code == 1 and message in err and "Traceback" not in err
