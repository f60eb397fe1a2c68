"""`meshctl observe` end to end against real SQLite flow stores with known flows.

Runs the real entry point (meshctl.cli.main.main: typer parsing, error handling, exit codes)
in-process: every filter flag, all four outputs, and one clear error line for bad values.
"""

from __future__ import annotations

import json
import sys
import time
from pathlib import Path

import pytest

from meshctl.flows.enrich import EnrichContext, Enricher
from meshctl.flows.store import FlowStore, store_path
from tests.climain import call

sys.path.insert(0, str(Path(__file__).parent))
from test_flows import IPS, catalog, record

OLD_S, NEW_S = 7200, 600  # node-1's flows are two hours old, node-2's ten minutes


@pytest.fixture(scope="module")
def state(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """node-1 (2h ago): cache->postgres DROPPED, backend->postgres FORWARDED, backend->cache egress
    FORWARDED; node-2 (10m ago): backend->cache 53/udp DROPPED, world->backend 8080 DROPPED."""
    d = tmp_path_factory.mktemp("state")
    now = time.time_ns()
    for node, age, recs in (
        ("node-1", OLD_S, [
            record("10.102.2.7", "10.102.1.5", 40000, 5432, 2, 2, 300, 400, ts=1),
            record("10.102.3.9", "10.102.1.5", 40001, 5432, 1, 0, 500, 400, cookie=12, ts=2),
            record("10.102.3.9", "10.102.2.7", 40002, 6379, 1, 1, 500, 300, direction=1, ts=3),
        ]),
        ("node-2", NEW_S, [
            record("10.102.3.9", "10.102.2.7", 40003, 53, 2, 2, 500, 300, proto=17, flags=0, ts=1),
            record("192.0.2.1", "10.102.3.9", 55555, 8080, 2, 2, 2, 500, ts=2),
        ]),
    ):
        s = FlowStore(store_path(d, node), node)
        e = Enricher(EnrichContext(node, catalog(), IPS), s.dims, offset_ns=now - age * 10**9)
        s.insert(e.rows(b"".join(recs)))
        s.close()
    return d


def run(state: Path, capsys: pytest.CaptureFixture[str], *args: str) -> tuple[int, str, str]:
    return call(capsys, "observe", "--state-dir", str(state), *args)


@pytest.fixture
def obs(state: Path, capsys: pytest.CaptureFixture[str]):  # type: ignore[no-untyped-def]
    def call(*args: str) -> list[dict]:  # type: ignore[type-arg]
        code, out, err = run(state, capsys, "-o", "json", *args)
        assert code == 0, err
        return [json.loads(line) for line in out.splitlines()]

    def fail(*args: str) -> str:
        code, out, err = run(state, capsys, *args)
        assert code == 1 and not out, out
        lines = err.strip().splitlines()
        assert len(lines) == 1 and lines[0].startswith("Error: ") and "Traceback" not in err, err
        return lines[0]

    call.fail = fail  # type: ignore[attr-defined]
    return call


def ports(flows: list[dict]) -> list[int]:  # type: ignore[type-arg]
    return [f["dst_port"] for f in flows]


def test_no_filter_merges_nodes_in_time_order(obs) -> None:  # type: ignore[no-untyped-def]
    flows = obs()
    assert ports(flows) == [5432, 5432, 6379, 53, 8080]
    assert [f["node"] for f in flows] == ["node-1"] * 3 + ["node-2"] * 2


@pytest.mark.parametrize(("args", "expected"), [
    (("--namespace", "production"), [5432, 5432, 6379, 53, 8080]),
    (("-n", "demo"), []),
    (("--pod", "production/cache"), [5432, 6379, 53]),
    (("--pod", "cache"), [5432, 6379, 53]),  # name without namespace: any namespace
    (("--from-pod", "production/backend"), [5432, 6379, 53]),
    (("--to-pod", "production/postgres"), [5432, 5432]),
    (("--to-pod", "backend"), [8080]),
    (("--from-label", "app=backend"), [5432, 6379, 53]),
    (("--from-label", "k8s:app=cache"), [5432]),
    (("--from-label", "app=back"), []),  # a whole label, not a prefix
    (("--to-label", "app=cache", "--to-label", "app=postgres"), [5432, 5432, 6379, 53]),  # repeated: OR
    (("--from-identity", "2"), [8080]),
    (("--to-identity", "400"), [5432, 5432]),
    (("--verdict", "DROPPED"), [5432, 53, 8080]),
    (("--verdict", "forwarded"), [5432, 6379]),
    (("--protocol", "udp"), [53]),
    (("--protocol", "TCP", "--verdict", "DROPPED"), [5432, 8080]),  # different flags: AND
    (("--port", "40001"), [5432]),  # source or destination port
    (("--port", "53"), [53]),
    (("--to-port", "6379"), [6379]),
    (("--to-port", "40001"), []),  # destination only
    (("--node", "node-2"), [53, 8080]),
    (("--since", "1h"), [53, 8080]),
    (("--until", "1h"), [5432, 5432, 6379]),
    (("--since", "3h", "--until", "1h"), [5432, 5432, 6379]),
    (("--last", "2"), [53, 8080]),
    (("--last", "1", "--node", "node-1"), [6379]),
    (("--last", "1", "--verdict", "FORWARDED"), [6379]),
    (("--first", "2"), [5432, 5432]),  # the oldest, across nodes
    (("--first", "1", "--node", "node-2"), [53]),
    (("--first", "1", "--verdict", "DROPPED", "--since", "1h"), [53]),
    (("--from-namespace", "production"), [5432, 5432, 6379, 53]),  # world has no namespace
    (("--to-namespace", "production"), [5432, 5432, 6379, 53, 8080]),
    (("--from-namespace", "demo"), []),
    (("--pod", "production/ca"), [5432, 6379, 53]),  # a prefix, as in Hubble
    (("--pod", "production/"), [5432, 5432, 6379, 53, 8080]),  # the whole namespace
    (("--to-pod", "production/post"), [5432, 5432]),
    (("--from-pod", "back"), [5432, 6379, 53]),  # a name prefix in any namespace
    (("--from-pod", "production/cachex"), []),
    (("--from-ip", "10.102.3.9"), [5432, 6379, 53]),
    (("--from-ip", "10.102.0.0/16"), [5432, 5432, 6379, 53]),
    (("--from-ip", "192.0.2.0/24"), [8080]),
    (("--to-ip", "10.102.1.5/32"), [5432, 5432]),
    (("--to-ip", "10.102.2.0/24", "--to-ip", "10.102.1.5"), [5432, 5432, 6379, 53]),  # repeated: OR
    (("--ip", "10.102.1.5"), [5432, 5432]),
    (("--to-ip", "10.103.0.0/16"), []),
    (("--protocol", "icmp"), []),
    (("--not", "--verdict", "DROPPED"), [5432, 6379]),
    (("--not", "--from-pod", "production/backend"), [5432, 8080]),
    (("--to-pod", "production/cache", "--not", "--protocol", "udp"), [6379]),
    (("--not", "--to-ip=10.102.1.0/24"), [6379, 53, 8080]),
    (("--not", "-n", "production"), []),
    # several --not flags form one denylist filter (AND), as in Hubble: only TCP to postgres goes
    (("--not", "--to-pod", "production/postgres", "--not", "--protocol", "tcp"), [6379, 53, 8080]),
])
def test_every_filter_flag(obs, args: tuple[str, ...], expected: list[int]) -> None:  # type: ignore[no-untyped-def]
    assert ports(obs(*args)) == expected


def test_since_absolute_time(obs) -> None:  # type: ignore[no-untyped-def]
    stamp = time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime(time.time() - 3600))
    assert ports(obs("--since", stamp)) == [53, 8080]


def test_default_is_the_last_20(state: Path, capsys) -> None:  # type: ignore[no-untyped-def]
    code, out, _ = run(state, capsys)
    assert code == 0 and len(out.splitlines()) == 5


@pytest.mark.parametrize("fmt", ["compact", "json", "table", "dict"])
def test_outputs(state: Path, capsys, fmt: str) -> None:  # type: ignore[no-untyped-def]
    code, out, err = run(state, capsys, "-o", fmt, "--to-pod", "production/postgres")
    assert code == 0, err
    if fmt == "compact":
        lines = out.splitlines()
        assert len(lines) == 2
        assert ("production/cache:40000 (ID:300) -> production/postgres:5432 (ID:400) DROPPED (default "
                "deny: production/postgres ingress isolated by production/database-security)") in lines[0]
        assert lines[1].endswith(
            "FORWARDED (TCP Flags: SYN) by CiliumNetworkPolicy production/database-security ingress[0]")
    elif fmt == "json":
        rows = [json.loads(line) for line in out.splitlines()]
        assert [r["verdict"] for r in rows] == ["DROPPED", "FORWARDED"]
        assert rows[0]["src_labels"] == ["k8s:app=cache", "k8s:io.kubernetes.pod.namespace=production"]
        assert rows[0]["isolated_by"] == ["production/database-security"] and rows[1]["cookie"] == 12
    elif fmt == "table":
        head, *rows = out.splitlines()
        assert head.split() == ["TIMESTAMP", "NODE", "SOURCE", "DESTINATION", "TYPE", "VERDICT", "SUMMARY"]
        assert len(rows) == 2 and "policy-verdict:ingress" in rows[0] and "DROPPED" in rows[0]
    else:
        blocks = out.strip().split("\n\n")
        assert len(blocks) == 2
        pairs = (line.partition(":") for line in blocks[0].splitlines())
        fields = {k.strip(): v.strip() for k, _, v in pairs}
        assert fields["VERDICT"] == "DROPPED" and fields["NODE"] == "node-1"
        assert fields["SRC"] == "production/cache 10.102.2.7:40000"


@pytest.mark.parametrize(("args", "message"), [
    (("--verdict", "MAYBE"), "--verdict: 'MAYBE' is not FORWARDED, DROPPED, AUDIT"),
    (("--protocol", "sctp"), "--protocol: 'sctp' is not tcp, udp, icmp, http or dns"),
    (("--port", "http"), "--port: 'http' is not a port number (0-65535)"),
    (("--to-port", "70000"), "--to-port: 70000 is not a port number (0-65535)"),
    (("--from-identity", "-1"), "--from-identity: -1 is not a numeric identity (0 to 2^32-1)"),
    (("--to-identity", "x"), "--to-identity: 'x' is not a numeric identity (0 to 2^32-1)"),
    (("--last", "0"), "--last: 0 is not a count of flows (1 or more)"),
    (("--last", "ten"), "--last: 'ten' is not a count of flows (1 or more)"),
    (("--since", "yesterday"), "--since: 'yesterday' is neither a duration (5m) nor a time"),
    (("--until", "soon"), "--until: 'soon' is neither a duration (5m) nor a time"),
    (("--since", "1m", "--until", "1h"), "--since is after --until"),
    (("--from-pod", "a/b/c"), "--from-pod: 'a/b/c' is not [namespace/]pod"),
    (("--to-label", "=x"), "--to-label: '=x' is not a label"),
    (("-n", "a/b"), "--namespace: 'a/b' is not a namespace name"),
    (("-o", "yaml"), "'yaml' is not one of 'compact', 'json', 'table', 'dict'"),
    (("--from-ip", "10.1.2.3/8"), "--from-ip: '10.1.2.3/8' is not an IP address or CIDR"),
    (("--to-ip", "db"), "--to-ip: 'db' is not an IP address or CIDR"),
    (("--to-namespace", "a/b"), "--to-namespace: 'a/b' is not a namespace name"),
    (("--first", "0"), "--first: 0 is not a count of flows (1 or more)"),
    (("--first", "1", "--last", "1"), "--first and --last: give one of them"),
    (("--not",), "--not must be followed by a filter flag"),
    (("--not", "--not", "--verdict", "DROPPED"), "--not must be followed by a filter flag"),
    (("--not", "--follow"), "--not must be followed by a filter flag"),
    (("--not", "--port"), "--not --port: missing value"),
    (("--not", "--port", "x"), "--port: 'x' is not a port number (0-65535)"),
    (("--node", "node-9"), "no flow store at"),
])
def test_bad_values_are_one_error_line(obs, args: tuple[str, ...], message: str) -> None:  # type: ignore[no-untyped-def]
    assert message in obs.fail(*args)
