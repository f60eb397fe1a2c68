"""HTTP flow records without Envoy: access log lines as Envoy writes them -> rows -> store -> observe.

The routes file is the real one meshctl writes for Envoy (meshctl.dataplane.envoy.write_routes);
the privileged L7 test checks the same path with Envoy's own log.
"""

from __future__ import annotations

import json
import sys
from ipaddress import IPv4Address, IPv4Network
from pathlib import Path

import pytest
from prometheus_client import generate_latest

from meshctl.catalog import Catalog, IdentityInfo, RuleOrigin
from meshctl.dataplane.envoy import ProxyFiles, write_routes
from meshctl.dataplane.envoy_config import policy_name
from meshctl.flows.dims import Dimensions
from meshctl.flows.enrich import EnrichContext
from meshctl.flows.filters import FilterError, FlowFilter
from meshctl.flows.httplog import HTTP_FIELDS, AccessLogTail, HttpRecords
from meshctl.flows.metrics import FlowCounters, registry_for
from meshctl.flows.render import compact, table
from meshctl.flows.store import FlowStore, follow, query_all
from meshctl.nodestate import Direction, FrozenMap, HttpPolicy, HttpRule, IpcacheEntry

FRONTEND, API = "10.101.1.2", "10.101.2.2"
ORIGIN = RuleOrigin("CiliumNetworkPolicy", "demo", "api-http-policy", "ingress", 0,
                    "policies/frontend-to-api.yaml", 9)
COOKIE = 0x51
GET_USERS = HttpRule(method="GET", path="/api/v1/users/[0-9]+")
POST_ORDERS = HttpRule(method="POST", path="/api/v1/orders", headers=("Content-Type: application/json",))
HTTP = HttpPolicy(IPv4Address(API), Direction.INGRESS, 3000, 3000, 300, COOKIE, (GET_USERS, POST_ORDERS))
T0 = 1_700_000_000.0


def context() -> EnrichContext:
    cat = Catalog(
        identities=FrozenMap({
            300: IdentityInfo(300, ("k8s:app=frontend",), ("demo/frontend",)),
            400: IdentityInfo(400, ("k8s:app=api",), ("demo/api",)),
        }),
        cookies=FrozenMap({COOKIE: ORIGIN}),
    )
    return EnrichContext("node-2", cat, {FRONTEND: "demo/frontend", API: "demo/api"})


def log_line(start: float, method: str, path: str, status: int, latency_us: int, rule: int | None) -> str:
    """One access log object as Envoy writes it (envoy_config.ACCESS_LOG_FIELDS)."""
    return json.dumps({
        "start": f"{start:.6f}", "method": method, "path": path, "authority": "api", "protocol": "HTTP/1.1",
        "status": status, "duration_ms": latency_us // 1000, "latency_us": latency_us,
        "client": f"{FRONTEND}:40312", "server": f"{API}:3000",
        "policy": policy_name(HTTP, rule) if rule is not None else None,
        "rbac": "allowed" if rule is not None else "denied", "flags": "-", "details": "via_upstream",
    })


@pytest.fixture()
def records(tmp_path: Path) -> HttpRecords:
    files = ProxyFiles(tmp_path / "proxy")
    files.routes.parent.mkdir(parents=True)
    ipcache = {IPv4Network(f"{FRONTEND}/32"): IpcacheEntry(300), IPv4Network(f"{API}/32"): IpcacheEntry(400)}
    write_routes(files, frozenset({HTTP}), ipcache)
    rec = HttpRecords(context(), Dimensions())
    rec.refresh_rules(files)
    return rec


LINES = [
    log_line(T0, "GET", "/api/v1/users/42", 200, 1500, 0),
    log_line(T0 + 1, "POST", "/api/v1/orders", 403, 90, None),
    log_line(T0 + 2, "GET", "/api/v1/products", 403, 80, None),
]


def test_an_allowed_request_names_its_rule_and_a_denied_one_the_rules_it_failed(
        records: HttpRecords, tmp_path: Path) -> None:
    store = FlowStore(tmp_path / "node-2.db", "node-2")
    store.dims = records.dims
    store.insert([], records.rows(LINES))
    flows = store.query_both()
    assert [(f.l7_type, f.verdict_name, f.http_method, f.http_url, f.http_status) for f in flows] == [
        ("http-request", "FORWARDED", "GET", "/api/v1/users/42", 0),
        ("http-response", "FORWARDED", "GET", "/api/v1/users/42", 200),
        ("http-request", "DROPPED", "POST", "/api/v1/orders", 0),
        ("http-response", "DROPPED", "POST", "/api/v1/orders", 403),
        ("http-request", "DROPPED", "GET", "/api/v1/products", 0),
        ("http-response", "DROPPED", "GET", "/api/v1/products", 403),
    ]
    get, response = flows[0], flows[1]
    assert (get.src_pod, get.dst_pod, get.src_identity, get.dst_identity, get.dst_port) == (
        "demo/frontend", "demo/api", 300, 400, 3000)
    assert get.time_ns == int(T0 * 1e9) and response.time_ns == get.time_ns + 1_500_000
    assert response.latency_ns == 1_500_000 and get.direction_name == "ingress"
    rule = ("CiliumNetworkPolicy demo/api-http-policy ingress[0] rules.http[0] "
            "(policies/frontend-to-api.yaml:9)")
    assert compact(get).endswith(
        f"demo/frontend:40312 (ID:300) -> demo/api:3000 (ID:400) http-request FORWARDED "
        f"(HTTP/1.1 GET /api/v1/users/42) by {rule}")
    assert compact(response).endswith("http-response FORWARDED (HTTP/1.1 200 1ms (GET /api/v1/users/42))")
    denied = flows[2]
    assert denied.drop_reason == (
        "no L7 rule of CiliumNetworkPolicy demo/api-http-policy ingress[0] (policies/frontend-to-api.yaml:9) "
        "matches")
    assert compact(denied).endswith(
        f"http-request DROPPED (HTTP/1.1 POST /api/v1/orders): {denied.drop_reason}")
    d = get.to_dict()
    assert d["l7"] == {"type": "REQUEST", "latency_ns": 0, "http": {
        "method": "GET", "url": "/api/v1/users/42", "host": "api", "protocol": "HTTP/1.1"}}
    assert response.to_dict()["l7"]["http"]["code"] == 200 and "http_method" not in d
    assert "http-request  FORWARDED  HTTP/1.1 GET /api/v1/users/42" in table([get])
    store.close()


def test_observe_filters_pick_http_records_like_hubbles(records: HttpRecords, tmp_path: Path) -> None:
    sys.path.insert(0, str(Path(__file__).parent))
    from test_flows import enricher, record

    store = FlowStore(tmp_path / "node-2.db", "node-2")
    store.dims = records.dims
    l4 = enricher(store.dims)
    store.insert(l4.rows(record("10.102.3.9", "10.102.1.5", 40001, 5432, 1, 0, 500, 400, cookie=12)),
                 records.rows(LINES))

    def shown(**kw: object) -> list[tuple[str, str, int]]:
        flows = query_all([store], FlowFilter(**kw))  # type: ignore[arg-type]
        return [(f.l7_type or "l3/l4", f.http_method, f.http_status) for f in flows]

    assert len(shown()) == 7  # the datapath's flow and six HTTP records
    assert shown(protocols=("http",)) == shown(protocols=("HTTP",)) and len(shown(protocols=("http",))) == 6
    assert shown(protocols=("udp",)) == []
    assert shown(protocols=("tcp",)) == shown()  # HTTP runs over TCP, as in Hubble
    assert shown(http_methods=("post",)) == [("http-request", "POST", 0), ("http-response", "POST", 403)]
    assert shown(http_statuses=("2+",)) == [("http-response", "GET", 200)]
    assert shown(http_statuses=("403",), http_methods=("GET",)) == [("http-response", "GET", 403)]
    assert shown(http_statuses=("40+",)) == shown(http_statuses=("4+",)) != []
    users = [("http-request", "GET", 0), ("http-response", "GET", 200)]
    assert shown(http_paths=("/users/[0-9]+$",)) == users
    assert shown(http_paths=("^/api/v1/users/4",)) == shown(http_paths=("/users/[0-9]+$",))
    assert shown(verdicts=("DROPPED",), protocols=("http",))[0] == ("http-request", "POST", 0)
    assert shown(excluded=FlowFilter(protocols=("http",))) == [("l3/l4", "", 0)]
    assert len(shown(excluded=FlowFilter(http_methods=("GET",)))) == 3
    for bad, message in ((dict(http_statuses=("6xx",)), "--http-status: '6xx' is not a status code"),
                         (dict(http_paths=("(",)), "--http-path: '(' is not a regular expression"),
                         (dict(http_methods=("G T",)), "--http-method: 'G T' is not an HTTP method"),
                         (dict(protocols=("sctp",)), "--protocol: 'sctp' is not tcp, udp, icmp, http")):
        with pytest.raises(FilterError) as err:
            FlowFilter(**bad)  # type: ignore[arg-type]
        assert message in str(err.value)
    store.insert([], records.rows([log_line(T0 + 5, "GET", "/api/v1/users/7", 200, 700, 0)]))
    stream = follow([store], FlowFilter(protocols=("http",)), interval=0.01, start_at_end=False)
    followed = [next(stream) for _ in range(8)]
    stream.close()
    assert [(f.l7_type, f.http_url) for f in followed[-2:]] == [
        ("http-request", "/api/v1/users/7"), ("http-response", "/api/v1/users/7")]
    store.close()


def test_the_access_log_is_read_in_whole_lines_once_and_again_after_it_was_replaced(tmp_path: Path) -> None:
    log = tmp_path / "access.log"
    tail = AccessLogTail(log)
    assert tail.lines() == []
    log.write_text(LINES[0] + "\n" + LINES[1][:20])
    assert tail.lines() == [LINES[0]]
    with log.open("a") as f:
        f.write(LINES[1][20:] + "\n")
    assert tail.lines() == [LINES[1]] and tail.lines() == []
    log.write_text(LINES[2] + "\n")  # cut (a new, shorter file): read from its start
    assert tail.lines() == [LINES[2]]


def test_a_restarted_agent_does_not_store_a_line_twice(records: HttpRecords) -> None:
    stored = records.rows(LINES[:2])
    again = HttpRecords(context(), records.dims, last_ns=int(stored[-1][0]))  # type: ignore[call-overload]
    again.http = records.http
    rows = again.rows(LINES)  # the whole log again: only the line it had not stored
    assert [r[HTTP_FIELDS.index("url")] for r in rows] == ["/api/v1/products"] * 2
    assert int(rows[0][0]) > int(stored[-1][0])  # type: ignore[call-overload]


def test_http_metrics_have_hubbles_names_and_labels(records: HttpRecords) -> None:
    counters = FlowCounters()
    counters.add_http(records.rows(LINES))
    text = generate_latest(registry_for(counters)).decode()
    assert 'meshctl_http_requests_total{method="GET",protocol="HTTP/1.1",reporter="server"} 2.0' in text
    assert 'meshctl_http_responses_total{method="POST",reporter="server",status="403"} 1.0' in text
    assert 'meshctl_http_responses_total{method="GET",reporter="server",status="200"} 1.0' in text
    bucket = 'meshctl_http_request_duration_seconds_bucket{le="0.005",method="GET",reporter="server"}'
    assert f"{bucket} 2.0" in text  # 1.5 ms, and 80 µs for the 403 of the denied GET
    assert 'meshctl_http_request_duration_seconds_count{method="POST",reporter="server"} 1.0' in text
    assert 'meshctl_http_request_duration_seconds_sum{method="GET",reporter="server"} 0.00158' in text
