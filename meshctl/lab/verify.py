"""The lab's apply verification: checks as real connections from the pods' netns, judged strictly.

A probe names its source as "ns/pod" and its destination as "ns/pod" or an IPv4 address. The
connection is made from inside the source pod's netns with a known source port
(meshctl.flows.probe.attempt). "allowed" means the connection completed (TCP handshake and the
server's line, or a UDP echo). A failed connection is "denied" only when the datapath recorded a
policy drop of it (the witness: the flow stores of the lab's agents, else the drop counters);
any other failure - refused, no route, a no-endpoint drop, a pod that does not exist - is an
error (meshctl.apply.probes.judge).
"""

from __future__ import annotations

import time
from collections.abc import Collection, Mapping
from ipaddress import IPv4Address
from pathlib import Path

from meshctl.apply.checks import destination_ip
from meshctl.apply.flowdrops import StoreDropSource
from meshctl.apply.gates import CheckLike, CheckOutcome, ProbeAttempt, check_nodes
from meshctl.apply.probes import PROBED_PROTOCOLS, judge, missing
from meshctl.apply.witness import LabWitness
from meshctl.errors import ApplyError, LabError

DEFAULT_TIMEOUT_S = 0.5


def connect_attempt(netns: str, src_ip: str, dst_ip: str, port: int, protocol: str,
                    timeout_s: float) -> ProbeAttempt:
    """One connection from `netns`, with its 5-tuple and wall-clock window."""
    from meshctl.flows.probe import attempt

    since = time.time_ns()
    res = attempt(netns, dst_ip, port, protocol, timeout_s)
    return ProbeAttempt(src_ip, dst_ip, res.sport, int(port), protocol.upper(), since, time.time_ns(), res.ok,
                        res.error)


class LabCheckRunner:
    """Callable(probe) -> CheckOutcome over real sockets in the lab's netns."""

    def __init__(
        self,
        cluster: str,
        pod_ips: Mapping[str, IPv4Address],
        timeout_s: float = DEFAULT_TIMEOUT_S,
        state_dir: Path | None = None,
        pod_nodes: Mapping[str, str] | None = None,
        witness: LabWitness | None = None,
    ) -> None:
        self.cluster, self.pod_ips, self.timeout_s = cluster, dict(pod_ips), timeout_s
        self.pod_nodes = dict(pod_nodes or {})
        self.witness = witness or lab_witness(cluster, state_dir)

    def __call__(self, check: CheckLike) -> CheckOutcome:
        from meshctl.lab import registry

        try:
            src = registry.pod(self.cluster, check.from_)
        except LabError:
            return missing(check, f"source pod {check.from_} does not exist in the lab")
        try:
            dst = destination_ip(check, self.pod_ips)
        except ApplyError as err:
            return missing(check, str(err))
        if str(check.protocol).upper() not in PROBED_PROTOCOLS:
            return missing(check, f"protocol {check.protocol} cannot be probed from a pod (TCP and UDP only)")
        nodes = tuple(getattr(check, "nodes", ()) or check_nodes(check, self.pod_nodes) or (src.node,))
        snapshot = self.witness.snapshot(nodes)
        att = connect_attempt(src.netns, str(src.ip), str(dst), int(check.port), str(check.protocol),
                              self.timeout_s)
        drops = [] if att.connected else self.witness.drops(nodes, att, snapshot)
        outcome = judge(check, att.connected, att.error, drops)
        return CheckOutcome(outcome.check, outcome.observed, outcome.detail, outcome.drops, att)


def lab_witness(cluster: str, state_dir: Path | None, visible: Collection[str] | None = None,
                own_store: Path | None = None) -> LabWitness:
    """The lab's witness: stores of the running lab agents (or `own_store` for the one visible node)."""
    from meshctl.apply.driver import read_drop_counts
    from meshctl.flows.store import store_path
    from meshctl.lab import agents

    def store_of(node: str) -> Path | None:
        if own_store is not None:
            return own_store if own_store.exists() else None
        if state_dir is None or node not in agents.running(cluster):
            return None
        path = store_path(state_dir, node)
        return path if path.exists() else None

    return LabWitness(store_of, lambda node: read_drop_counts(cluster, node), visible)


def lab_drop_source(cluster: str, state_dir: Path, pod_ips: Mapping[str, object]) -> StoreDropSource:
    """The flow source of a lab cluster: its agents are the ones `meshctl lab up` started."""
    from meshctl.lab import agents

    return StoreDropSource(state_dir, lambda: agents.running(cluster),
                           {str(ip): pod for pod, ip in pod_ips.items()})
