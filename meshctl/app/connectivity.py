"""`meshctl connectivity test`: real connections in the lab, each confirmed in the flow store.

Runs the repo's ConnectivityCheck documents plus the checks meshctl.flows.generate makes up
(pod to pod on one node and across nodes, pod to ClusterIP service), with expectations from
the compiled intent. A check passes when the connection's outcome matches the expectation AND
the agents recorded the matching verdict (FORWARDED or DROPPED flow of that connection; unless
flow confirmation is off): the datapath said so, not just a timeout.
"""

from __future__ import annotations

import time
from collections.abc import Mapping, Sequence
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING

from meshctl.errors import LabError, MeshctlError
from meshctl.flows.filters import FlowFilter
from meshctl.flows.flow import Flow
from meshctl.flows.generate import Endpoint, Probe, ServiceTarget, generate

if TYPE_CHECKING:
    from meshctl.app.workspace import Workspace
    from meshctl.backend.lab import LabPod
    from meshctl.source import DesiredState

MAX_PARALLEL = 8


@dataclass(frozen=True)
class CheckResult:
    probe: Probe
    connected: bool
    flow: Flow | None
    confirm: bool
    detail: str = ""

    # the fields the report shows, named as before
    @property
    def name(self) -> str:
        return self.probe.name

    @property
    def kind(self) -> str:
        return self.probe.kind

    @property
    def src(self) -> str:
        return self.probe.src

    @property
    def dst(self) -> str:
        return self.probe.dst

    @property
    def port(self) -> int:
        return self.probe.port

    @property
    def protocol(self) -> str:
        return self.probe.protocol

    @property
    def expect(self) -> str:
        return self.probe.expect

    @property
    def locality(self) -> str:
        return self.probe.locality

    @property
    def expected_allowed(self) -> bool | None:
        """What the intent says for this very connection (a "mixed" service: its flow's backend)."""
        if self.probe.expect == "mixed":
            return self.probe.expected_for(self.flow.dst_ip) if self.flow else None
        return self.probe.expect == "allowed"

    @property
    def outcome_ok(self) -> bool:
        return self.connected == self.expected_allowed

    @property
    def passed(self) -> bool:
        return self.outcome_ok and (self.flow is not None or not self.confirm)


@dataclass
class ConnectivityReport:
    results: list[CheckResult] = field(default_factory=list)
    notes: list[str] = field(default_factory=list)  # what was skipped and why

    @property
    def passed(self) -> int:
        return sum(r.passed for r in self.results)

    @property
    def ok(self) -> bool:
        return bool(self.results) and self.passed == len(self.results)


def _flow_matches(probe: Probe, sport: int, f: Flow) -> bool:
    """This very connection: its source port, and a destination the probe may end up at."""
    return f.src_port == sport and (not probe.flow_dsts or f.dst_ip in probe.flow_dsts) and (
        not probe.flow_ports or f.dst_port in probe.flow_ports)


def _confirm(state_dir: Path, runs: Sequence[tuple[Probe, bool, int, int]],
             wait_s: Sequence[float]) -> list[Flow | None]:
    """The flow of each connection (verdict as it turned out), waiting up to wait_s[i] for it."""
    from meshctl.flows.store import StoreError, open_stores

    found: list[Flow | None] = [None] * len(runs)
    start = time.monotonic()
    while True:
        try:
            stores = open_stores(state_dir)
        except StoreError:
            stores = []
        try:
            for i, (probe, connected, since, sport) in enumerate(runs):
                if found[i] is not None:
                    continue
                flt = FlowFilter(from_pods=(probe.src,), protocols=(probe.protocol.lower(),),
                                 verdicts=("FORWARDED" if connected else "DROPPED",), since_ns=since,
                                 to_ports=probe.flow_ports)
                for s in stores:
                    hit = next((f for _, f in s.query(flt) if _flow_matches(probe, sport, f)), None)
                    if hit is not None:
                        found[i] = hit
                        break
        finally:
            for s in stores:
                s.close()
        elapsed = time.monotonic() - start
        if all(f is not None or elapsed >= w for f, w in zip(found, wait_s, strict=True)):
            return found
        time.sleep(0.1)


def _repo_probes(desired: DesiredState, pods: Mapping[str, LabPod], names: tuple[str, ...],
                 services: Sequence[ServiceTarget]) -> list[Probe]:
    checks = [c for c in desired.checks if not names or c.name in names]
    unknown = set(names) - {c.name for c in desired.checks}
    if unknown:
        raise MeshctlError(f"--check {', '.join(sorted(unknown))}: no such ConnectivityCheck in the repo")
    out = []
    for c in checks:
        src = pods.get(c.from_)
        where = f"{c.source.file}:{c.source.line}"
        if src is None:
            raise LabError(f"{where}: check {c.name}: pod {c.from_} is not in the lab")
        if c.to_pod:
            dst = pods.get(c.to)
            if dst is None:
                raise LabError(f"{where}: check {c.name}: pod {c.to} is not in the lab")
            dst_ip, locality = dst.ip, "same node" if dst.node == src.node else "cross node"
        else:
            dst_ip, locality = c.to, "external"
        frontend = (dst_ip, c.port, c.protocol)
        svc = next((t for t in services if (t.cluster_ip, t.port, t.protocol) == frontend), None)
        if svc is not None:  # a ClusterIP: the flow shows the backend the load balancer picked
            out.append(Probe("check", c.name, c.from_, c.to, dst_ip, c.port, c.protocol, c.expect, "service",
                             flow_dsts=(*sorted(ip for ip, _ in svc.backends), dst_ip),
                             flow_ports=tuple(sorted({p for _, p in svc.backends} | {c.port})), source=where))
            continue
        out.append(Probe("check", c.name, c.from_, c.to, dst_ip, c.port, c.protocol, c.expect, locality,
                         flow_dsts=(dst_ip,), flow_ports=(c.port,), source=where))
    return out


def _service_targets(desired: DesiredState) -> list[ServiceTarget]:
    from meshctl.compile.backends import resolve_backends

    out = []
    for svc in sorted(desired.services, key=lambda s: s.key):
        if svc.headless or svc.cluster_ip is None:
            continue
        for sp in svc.ports:
            backends = resolve_backends(svc, desired.pods, sp)
            out.append(ServiceTarget(svc.key, sp.name or "", str(svc.cluster_ip), sp.port, sp.protocol,
                                     tuple((str(b.pod.pod_ip), b.port) for b in backends)))
    return out


def _generated(ws: Workspace, pods: Mapping[str, LabPod], services: list[ServiceTarget],
               report: ConnectivityReport) -> list[Probe]:
    from meshctl.dataplane.node import current_build
    from meshctl.state import load_state
    from meshctl.state.tables import compile_desired

    compiled = compile_desired(ws.desired, load_state(ws.state_dir), current_build())
    endpoints = [Endpoint(p.key, p.node, p.ip, tuple((n, "TCP") for n in p.tcp_ports)
                          + tuple((n, "UDP") for n in p.udp_ports))
                 for p in pods.values()]
    desired = ws.desired
    if desired.services:
        if desired.config.load_balancer.kube_proxy_replacement:
            for s in services:
                if not s.backends:
                    report.notes.append(f"service {s.key} port {s.port_name or s.port}: no backends, skipped")
        else:
            report.notes.append("services skipped: kubeProxyReplacement is off, nothing serves ClusterIPs")
    else:
        report.notes.append("no services in the repo: no pod-to-service checks")
    return generate(endpoints, ws.node_order, compiled.nodes, services)


def run_checks(repo: Path, names: tuple[str, ...] = (), confirm: bool = True, timeout: float = 1.0,
               flow_wait_s: float = 3.0, generated: bool = True) -> ConnectivityReport:
    """Repo checks (all, or those named) and, unless names are given or generated is off, generated ones."""
    from meshctl.app.workspace import open_workspace
    from meshctl.backend.lab import LabBackend
    from meshctl.flows.context import repo_info
    from meshctl.flows.probe import attempt

    info = repo_info(repo)
    ws = open_workspace(repo)
    if not isinstance(ws.backend, LabBackend):
        raise LabError("`connectivity test` connects from the pods of the lab: it runs on the lab only")
    pods = ws.backend.pods()
    report = ConnectivityReport()
    services = _service_targets(ws.desired) if ws.desired.config.load_balancer.kube_proxy_replacement else []
    probes = _repo_probes(ws.desired, pods, names, services)
    if generated and not names:
        probes += _generated(ws, pods, services, report)

    def run(p: Probe) -> tuple[bool, int, int, str]:
        start = time.time_ns()
        res = attempt(pods[p.src].netns, p.dst_ip, p.port, p.protocol, timeout)
        return res.ok, start, res.sport, res.error

    with ThreadPoolExecutor(max_workers=MAX_PARALLEL) as pool:
        outcomes = list(pool.map(run, probes))
    flows: list[Flow | None] = [None] * len(probes)
    if confirm and probes:
        waits = [flow_wait_s if (p.expect == "mixed" or ok == (p.expect == "allowed")) else 0.5
                 for p, (ok, _, _, _) in zip(probes, outcomes, strict=True)]
        runs = [(p, ok, t, sport) for p, (ok, t, sport, _) in zip(probes, outcomes, strict=True)]
        flows = _confirm(info.state_dir, runs, waits)
    for p, (ok, _, _, err), flow in zip(probes, outcomes, flows, strict=True):
        detail = err
        if confirm and flow is None:
            verdict = "FORWARDED" if ok else "DROPPED"
            detail = (detail + "; " if detail else "") + f"no {verdict} flow recorded (are the agents up?)"
        report.results.append(CheckResult(p, ok, flow, confirm, detail))
    return report
