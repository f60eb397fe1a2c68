"""Property: every observe filter (and `--not` of any of them) selects exactly the stored flows a
plain Python reading of Hubble's semantics selects: same flag repeated = OR, different flags =
AND, pods by prefix, IPs by address or CIDR, the denylist leaves out what matches all its flags.

The flows are real rows in a real SQLite flow store (written by the agent's enricher); the
filter runs as the store's SQL. The reference works on the decoded flows, so a wrong clause, a
missing parenthesis around an OR, or a NOT that binds the wrong way shows as a difference.
"""

from __future__ import annotations

import ipaddress
import random
import sys
import time
from pathlib import Path

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from meshctl.flows.enrich import EnrichContext, Enricher
from meshctl.flows.filters import FlowFilter
from meshctl.flows.flow import Flow
from meshctl.flows.store import FlowStore, store_path

sys.path.insert(0, str(Path(__file__).parent))
from test_flows import IPS, catalog, record

WORLD = ["192.0.2.1", "198.51.100.7"]
IDENTITY = {"10.102.1.5": 400, "10.102.2.7": 300, "10.102.3.9": 500}
ADDRESSES = [*IPS, *WORLD]
PROTOCOLS = {"tcp": 6, "udp": 17, "icmp": 1}

NAMESPACES = ["production", "demo"]
PODS = ["production/", "production/ca", "production/cache", "production/cachex", "back", "post", "c"]
NETS = ["10.102.1.5", "10.102.2.7", "192.0.2.1", "10.102.0.0/16", "10.102.2.0/24", "192.0.2.0/24",
        "0.0.0.0/0", "203.0.113.0/24"]
PORTS = [53, 5432, 6379, 8080, 40000, 40001]


@pytest.fixture(scope="module")
def store(tmp_path_factory: pytest.TempPathFactory) -> FlowStore:
    rng = random.Random(12)
    recs = []
    for i in range(80):
        src, dst = rng.sample(ADDRESSES, 2)
        proto = rng.choice(list(PROTOCOLS.values()))
        sport = rng.choice([40000, 40001, 55555])
        dport = rng.choice([53, 5432, 6379, 8080])
        verdict = rng.choice([1, 2])
        recs.append(record(src, dst, sport, dport, verdict, 0 if verdict == 1 else 2,
                           IDENTITY.get(src, 2), IDENTITY.get(dst, 2), proto=proto, ts=i + 1))
    path = store_path(tmp_path_factory.mktemp("state"), "node-1")
    s = FlowStore(path, "node-1")
    e = Enricher(EnrichContext("node-1", catalog(), IPS), s.dims, offset_ns=time.time_ns() - 10**12)
    s.insert(e.rows(b"".join(recs)))
    return s


def _ns(pod: str) -> str:
    return pod.partition("/")[0] if pod else ""


def _pod(pod: str, prefix: str) -> bool:
    if "/" in prefix:
        return pod.startswith(prefix)
    return bool(pod) and pod.partition("/")[2].startswith(prefix)


def _ip(ip: str, value: str) -> bool:
    return ipaddress.ip_address(ip) in ipaddress.ip_network(value)


def matches(f: Flow, flt: FlowFilter) -> bool:
    """Hubble's semantics, read plainly (no SQL)."""
    ends = ((f.src_pod, f.src_ip), (f.dst_pod, f.dst_ip))
    src, dst = ends
    groups = [
        (flt.namespaces, lambda v: any(_ns(p) == v for p, _ in ends)),
        (flt.from_namespaces, lambda v: _ns(src[0]) == v),
        (flt.to_namespaces, lambda v: _ns(dst[0]) == v),
        (flt.pods, lambda v: any(_pod(p, v) for p, _ in ends)),
        (flt.from_pods, lambda v: _pod(src[0], v)),
        (flt.to_pods, lambda v: _pod(dst[0], v)),
        (flt.ips, lambda v: any(_ip(ip, v) for _, ip in ends)),
        (flt.from_ips, lambda v: _ip(src[1], v)),
        (flt.to_ips, lambda v: _ip(dst[1], v)),
        (flt.verdicts, lambda v: f.verdict == (1 if v == "FORWARDED" else 2)),
        (flt.protocols, lambda v: f.protocol == PROTOCOLS[v]),
        (flt.ports, lambda v: v in (f.src_port, f.dst_port)),
        (flt.to_ports, lambda v: f.dst_port == v),
    ]
    ok = all(any(test(v) for v in values) for values, test in groups if values)
    if ok and flt.excluded is not None and flt.excluded.where()[0] != "1":
        return not matches(f, flt.excluded)
    return ok


def filters() -> st.SearchStrategy[dict[str, tuple[object, ...]]]:
    small = {
        "namespaces": NAMESPACES, "from_namespaces": NAMESPACES, "to_namespaces": NAMESPACES,
        "pods": PODS, "from_pods": PODS, "to_pods": PODS, "ips": NETS, "from_ips": NETS, "to_ips": NETS,
        "verdicts": ["FORWARDED", "DROPPED"], "protocols": list(PROTOCOLS), "ports": PORTS,
        "to_ports": PORTS,
    }
    fields = {name: st.lists(st.sampled_from(values), max_size=2, unique=True).map(tuple)
              for name, values in small.items()}
    return st.fixed_dictionaries({}, optional=fields)  # type: ignore[arg-type]


@settings(max_examples=300, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(allow=filters(), deny=filters())
def test_sql_filter_selects_what_the_reference_selects(store: FlowStore, allow: dict, deny: dict) -> None:  # type: ignore[type-arg]
    everything = [f for _, f in store.query()]
    assert len(everything) == 80
    flt = FlowFilter(**allow, excluded=FlowFilter(**deny) if deny else None)  # type: ignore[arg-type]
    got = [f.time_ns for _, f in store.query(flt)]
    want = [f.time_ns for f in everything if matches(f, flt)]
    assert got == want
