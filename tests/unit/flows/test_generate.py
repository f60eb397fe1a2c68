"""Generated connectivity checks (meshctl.flows.generate) over compiled example repos."""

from __future__ import annotations

from pathlib import Path

import pytest

from meshctl.compile import EndpointTable, IdentityTable, compile_cluster
from meshctl.compile.backends import resolve_backends
from meshctl.compile.trace import with_trace_ips
from meshctl.flows.generate import Endpoint, Probe, ServiceTarget, generate
from meshctl.source import load_desired

REPO = Path(__file__).resolve().parents[3]


def setup(example: str) -> tuple[list[Endpoint], list[str], dict, list[ServiceTarget]]:  # type: ignore[type-arg]
    desired = with_trace_ips(load_desired(REPO / "examples" / example))
    compiled = compile_cluster(desired, IdentityTable(), EndpointTable(), "h")
    eps = [Endpoint(f"{p.namespace}/{p.name}", p.node_name, str(p.pod_ip),
                    tuple((c.container_port, c.protocol) for c in p.ports)) for p in desired.pods]
    services = [ServiceTarget(s.key, sp.name or "", str(s.cluster_ip), sp.port, sp.protocol,
                              tuple((str(b.pod.pod_ip), b.port)
                                    for b in resolve_backends(s, desired.pods, sp)))
                for s in desired.services if s.cluster_ip is not None for sp in s.ports]
    return eps, [n.name for n in desired.config.nodes], compiled.nodes, services


def summary(probes: list[Probe]) -> list[tuple[str, str, str, int, str, str]]:
    return [(p.kind, p.src, p.dst, p.port, p.locality, p.expect) for p in probes]


def test_services_example_covers_node_pairs_same_node_and_services() -> None:
    eps, nodes, states, services = setup("services")
    probes = generate(eps, nodes, states, services)
    pods = [p for p in probes if p.kind == "pod-to-pod"]
    assert summary(pods) == [
        # api accepts only the client on 3000: another api pod is denied at the destination
        ("pod-to-pod", "demo/api-1", "demo/api-2", 3000, "cross node", "denied"),
        ("pod-to-pod", "demo/client", "demo/api-3", 3000, "cross node", "allowed"),
        ("pod-to-pod", "demo/api-2", "demo/api-3", 3000, "cross node", "denied"),
        ("pod-to-pod", "demo/client", "demo/api-1", 3000, "same node", "allowed"),
    ]
    svc = {p.name: p for p in probes if p.kind == "pod-to-service"}
    http = svc["demo/api:http"]
    assert (http.src, http.dst_ip, http.port, http.expect) == ("demo/client", "10.96.0.10", 80, "allowed")
    assert set(http.flow_ports) == {80, 3000} and "10.96.0.10" in http.flow_dsts
    assert len(http.expect_by_dst) == 3  # one verdict per backend
    echo = svc["demo/api:echo"]
    assert (echo.protocol, echo.port, echo.expect) == ("UDP", 5353, "allowed")


def test_production_example_goes_the_other_way_when_a_node_serves_nothing() -> None:
    eps, nodes, states, _ = setup("production")
    probes = generate(eps, nodes, states)
    assert summary(probes) == [
        ("pod-to-pod", "production/postgres", "production/backend", 8080, "cross node", "allowed"),
        # cache (node-3) serves nothing: node-1/node-3 becomes cache -> postgres
        ("pod-to-pod", "production/cache", "production/postgres", 5432, "cross node", "allowed"),
        ("pod-to-pod", "production/cache", "production/backend", 8080, "cross node", "denied"),
    ]


def test_mixed_service_expectation_follows_the_backend_of_the_flow() -> None:
    p = Probe("pod-to-service", "s", "a/c", "service a/s", "10.96.0.1", 80, "TCP", "mixed", "service",
              expect_by_dst=(("10.0.0.1", True), ("10.0.0.2", False)))
    assert p.expected_for("10.0.0.1") is True and p.expected_for("10.0.0.2") is False
    assert p.expected_for("10.0.0.9") is None
    plain = Probe("check", "x", "a/b", "a/c", "1.2.3.4", 1, "TCP", "denied", "cross node")
    assert plain.expected_for("") is False


@pytest.mark.parametrize("example", ["three-tier", "production", "services"])
def test_every_generated_check_targets_a_served_port(example: str) -> None:
    eps, nodes, states, services = setup(example)
    served = {(e.ip, port, proto) for e in eps for port, proto in e.ports}
    for p in generate(eps, nodes, states, services):
        if p.kind == "pod-to-pod":
            assert (p.dst_ip, p.port, p.protocol) in served
        else:  # every backend serves one of the ports its flow may show
            for ip, _ in p.expect_by_dst:
                assert any((ip, port, p.protocol) in served for port in p.flow_ports)
