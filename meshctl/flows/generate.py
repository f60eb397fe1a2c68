"""The checks `meshctl connectivity test` makes up by itself, like `cilium connectivity test`.

Pure: from the lab's pods (node, address, served ports), the compiled NodeStates and the
services, pick connections that cover the datapath's paths and say what the intent expects:
- pod to pod across nodes: for every pair of nodes, one source pod on the first and one
  destination pod on the second (or the other way when nothing serves on the second), on a
  port the destination serves;
- pod to pod on one node: for every node with two pods or more, one pair;
- pod to service: for every ClusterIP service port with backends, one client pod (on another
  node than the first backend when there is one) to ClusterIP:port.
The expected verdict is meshctl.verdicts.connection_verdict over the compiled NodeStates (the
same emulation of bpf/lib/policy.h that plans use); for a service, per backend (policy applies
to the backend the load balancer picked), so backends that disagree make the check "mixed".
"""

from __future__ import annotations

from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from ipaddress import IPv4Address

from meshctl.flows.flow import PROTOCOL_NUMBERS
from meshctl.nodestate import NodeState
from meshctl.verdicts import connection_verdict


@dataclass(frozen=True)
class Endpoint:
    """A lab pod as the generator sees it."""

    key: str  # "namespace/pod"
    node: str
    ip: str
    ports: tuple[tuple[int, str], ...] = ()  # (port, "TCP"|"UDP") its server answers on


@dataclass(frozen=True)
class Probe:
    """One connection to make, what it should do, and how to recognise its flow."""

    kind: str  # "check" (a repo ConnectivityCheck) | "pod-to-pod" | "pod-to-service"
    name: str
    src: str  # "namespace/pod"
    dst: str  # "namespace/pod", "service namespace/name" or an address
    dst_ip: str  # where the probe connects
    port: int
    protocol: str  # TCP | UDP
    expect: str  # allowed | denied | mixed (service backends disagree)
    locality: str  # same node | cross node | external | service
    flow_dsts: tuple[str, ...] = ()  # destination addresses its flow may show ("" = any)
    flow_ports: tuple[int, ...] = ()
    expect_by_dst: tuple[tuple[str, bool], ...] = field(default=())  # backend ip -> allowed
    source: str = ""  # where the check comes from (file:line for repo checks)

    def expected_for(self, dst_ip: str) -> bool | None:
        """Allowed? for the flow's destination (a service backend); None when unknown."""
        if self.expect != "mixed":
            return self.expect == "allowed"
        return dict(self.expect_by_dst).get(dst_ip)


@dataclass(frozen=True)
class ServiceTarget:
    """One ClusterIP service port and its backends (ip, target port)."""

    key: str  # "namespace/name"
    port_name: str
    cluster_ip: str
    port: int
    protocol: str
    backends: tuple[tuple[str, int], ...]


def allowed(states: Mapping[str, NodeState], src_ip: str, dst_ip: str, protocol: str, port: int) -> bool:
    verdict = connection_verdict(states, IPv4Address(src_ip), IPv4Address(dst_ip),
                                 PROTOCOL_NUMBERS[protocol.lower()], port)
    return verdict.allowed


def _word(ok: bool) -> str:
    return "allowed" if ok else "denied"


def _by_node(endpoints: Sequence[Endpoint], nodes: Sequence[str]) -> dict[str, list[Endpoint]]:
    out: dict[str, list[Endpoint]] = {n: [] for n in nodes}
    for ep in sorted(endpoints, key=lambda e: e.key):
        out.setdefault(ep.node, []).append(ep)
    return out


def pod_probe(src: Endpoint, dst: Endpoint, states: Mapping[str, NodeState]) -> Probe:
    port, proto = dst.ports[0]
    locality = "same node" if src.node == dst.node else "cross node"
    name = f"{src.node}->{dst.node}" if src.node != dst.node else f"{src.node} local"
    return Probe("pod-to-pod", name, src.key, dst.key, dst.ip, port, proto,
                 _word(allowed(states, src.ip, dst.ip, proto, port)), locality,
                 flow_dsts=(dst.ip,), flow_ports=(port,), source="generated")


def pod_to_pod(endpoints: Sequence[Endpoint], nodes: Sequence[str],
               states: Mapping[str, NodeState]) -> list[Probe]:
    """One pair per pair of nodes (the first to the second) and one pair inside each node."""
    by_node = _by_node(endpoints, nodes)
    order = [n for n in nodes if by_node.get(n)]
    out: list[Probe] = []
    turn = 0  # rotates through the pods so the checks do not all use the same ones
    for i, a in enumerate(order):
        for b in order[i + 1:]:
            if not any(e.ports for e in by_node[b]):
                a, b = b, a  # nothing serves on the second node: go the other way
            srcs, dsts = by_node[a], [e for e in by_node[b] if e.ports]
            if not dsts:
                continue
            out.append(pod_probe(srcs[turn % len(srcs)], dsts[turn % len(dsts)], states))
            turn += 1
    for n in order:
        pods = by_node[n]
        dst = next((e for e in pods if e.ports), None)
        src = next((e for e in pods if dst is not None and e.key != dst.key), None)
        if dst is not None and src is not None:
            out.append(pod_probe(src, dst, states))
    return out


def pod_to_service(endpoints: Sequence[Endpoint], services: Sequence[ServiceTarget],
                   states: Mapping[str, NodeState]) -> list[Probe]:
    """ClusterIP:port from a pod that is not a backend, preferably on another node."""
    by_ip = {e.ip: e for e in endpoints}
    out: list[Probe] = []
    for svc in services:
        if not svc.backends:
            continue
        backend_ips = {ip for ip, _ in svc.backends}
        first_node = by_ip[svc.backends[0][0]].node if svc.backends[0][0] in by_ip else ""
        clients = sorted((e for e in endpoints if e.ip not in backend_ips),
                         key=lambda e: (e.node == first_node, e.key))
        if not clients:
            continue
        client = clients[0]
        per = tuple((ip, allowed(states, client.ip, ip, svc.protocol, port)) for ip, port in svc.backends)
        verdicts = {ok for _, ok in per}
        expect = _word(verdicts.pop()) if len(verdicts) == 1 else "mixed"
        name = f"{svc.key}:{svc.port_name or svc.port}"
        out.append(Probe("pod-to-service", name, client.key, f"service {svc.key}", svc.cluster_ip, svc.port,
                         svc.protocol, expect, "service",
                         flow_dsts=(*sorted(backend_ips), svc.cluster_ip),
                         flow_ports=tuple(sorted({p for _, p in svc.backends} | {svc.port})),
                         expect_by_dst=per, source="generated"))
    return out


def generate(endpoints: Sequence[Endpoint], nodes: Sequence[str], states: Mapping[str, NodeState],
             services: Sequence[ServiceTarget] = (),
             keep: Callable[[Probe], bool] = lambda _: True) -> list[Probe]:
    return [p for p in (*pod_to_pod(endpoints, nodes, states), *pod_to_service(endpoints, services, states))
            if keep(p)]
