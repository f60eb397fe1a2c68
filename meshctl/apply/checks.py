"""Run ConnectivityCheck resources as real connections in the lab.

A check names its source as "ns/pod" and its destination as "ns/pod" or an IPv4 address. The
connection is made from inside the source pod's netns (meshctl.lab.probe); "allowed" means the
connection completed (TCP handshake, or a UDP reply from the destination's echo server),
"denied" means it did not within the timeout.
"""

from __future__ import annotations

from collections.abc import Mapping
from ipaddress import IPv4Address

from meshctl.apply.gates import CheckLike, CheckOutcome
from meshctl.errors import ApplyError

DEFAULT_TIMEOUT_S = 0.5


def destination_ip(check: CheckLike, pod_ips: Mapping[str, IPv4Address]) -> IPv4Address:
    to = str(check.to)
    try:
        return IPv4Address(to)
    except ValueError:
        pass
    if to not in pod_ips:
        raise ApplyError(f"check {check.name}: destination pod {to} has no address in the lab")
    return pod_ips[to]


class LabCheckRunner:
    """Callable(check) -> CheckOutcome over real sockets in the lab's netns."""

    def __init__(
        self, cluster: str, pod_ips: Mapping[str, IPv4Address], timeout_s: float = DEFAULT_TIMEOUT_S
    ) -> None:
        self.cluster, self.pod_ips, self.timeout_s = cluster, dict(pod_ips), timeout_s

    def __call__(self, check: CheckLike) -> CheckOutcome:
        from meshctl.lab.probe import connect

        dst = destination_ip(check, self.pod_ips)
        result = connect(self.cluster, check.from_, dst, check.port, str(check.protocol), self.timeout_s)
        observed = "allowed" if result.ok else "denied"
        detail = result.error or (result.reply or "")
        return CheckOutcome(check, observed, str(detail))
