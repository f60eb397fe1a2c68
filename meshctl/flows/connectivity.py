"""`meshctl connectivity test`: run the repo's ConnectivityCheck connections in the lab and
confirm each one in the flow store (the FORWARDED or DROPPED flow of that very connection).

A check passes when the connection's outcome matches `expect` AND the agents recorded the
matching verdict (unless flow confirmation is off): the datapath said so, not just a timeout.
"""

from __future__ import annotations

import time
from dataclasses import dataclass
from pathlib import Path

from meshctl.errors import LabError, MeshctlError
from meshctl.flows.filters import FlowFilter
from meshctl.flows.flow import Flow


@dataclass(frozen=True)
class CheckResult:
    name: str
    src: str
    dst: str
    port: int
    protocol: str
    expect: str  # allowed | denied
    locality: str  # same node | cross node | external
    connected: bool
    flow: Flow | None
    confirm: bool
    detail: str = ""

    @property
    def outcome_ok(self) -> bool:
        return self.connected == (self.expect == "allowed")

    @property
    def passed(self) -> bool:
        return self.outcome_ok and (self.flow is not None or not self.confirm)


def _find_flow(state_dir: Path, src: str, dst: str | None, dst_ip: str, port: int, protocol: str,
               verdict: str, since_ns: int, wait_s: float) -> Flow | None:
    from meshctl.flows.store import StoreError, open_stores, query_all

    flt = FlowFilter(from_pods=(src,), to_pods=(dst,) if dst else (), to_ports=(port,),
                     protocols=(protocol.lower(),), verdicts=(verdict,), since_ns=since_ns)
    deadline = time.monotonic() + wait_s
    while True:
        try:
            stores = open_stores(state_dir)
        except StoreError:
            stores = []
        try:
            found = [f for f in query_all(stores, flt) if dst or f.dst_ip == dst_ip]
        finally:
            for s in stores:
                s.close()
        if found or time.monotonic() >= deadline:
            return found[0] if found else None
        time.sleep(0.1)


def run_checks(repo: Path, names: tuple[str, ...] = (), confirm: bool = True, timeout: float = 1.0,
               flow_wait_s: float = 3.0) -> list[CheckResult]:
    from meshctl.flows.context import repo_info
    from meshctl.lab import probe, registry
    from meshctl.source import load_desired

    info = repo_info(repo)
    desired = load_desired(repo)
    reg = registry.load(info.cluster)
    if reg is None:
        raise LabError(f"no lab named {info.cluster!r} is up: run `meshctl lab up -C {repo}`")
    checks = [c for c in desired.checks if not names or c.name in names]
    unknown = set(names) - {c.name for c in desired.checks}
    if unknown:
        raise MeshctlError(f"--check {', '.join(sorted(unknown))}: no such ConnectivityCheck in {repo}")
    results = []
    for c in checks:
        src = reg.pods.get(c.from_)
        if src is None:
            raise LabError(f"{c.source}: check {c.name}: pod {c.from_} is not in the lab")
        if c.to_pod:
            dst = reg.pods.get(c.to)
            if dst is None:
                raise LabError(f"{c.source}: check {c.name}: pod {c.to} is not in the lab")
            dst_ip, locality = dst.ip, "same node" if dst.node == src.node else "cross node"
        else:
            dst_ip, locality = c.to, "external"
        start = time.time_ns()
        res = probe.connect(info.cluster, c.from_, dst_ip, c.port, c.protocol, timeout)
        verdict = "FORWARDED" if res.ok else "DROPPED"
        flow = None
        if confirm:
            flow = _find_flow(info.state_dir, c.from_, c.to if c.to_pod else None, dst_ip, c.port, c.protocol,
                              verdict, start, flow_wait_s if res.ok == (c.expect == "allowed") else 0.5)
        detail = res.error or ""
        if confirm and flow is None:
            detail = (detail + "; " if detail else "") + f"no {verdict} flow recorded (are the agents up?)"
        results.append(CheckResult(c.name, c.from_, c.to, c.port, c.protocol, c.expect, locality,
                                   res.ok, flow, confirm, detail))
    return results
