"""Where a check connects to: a probe names its destination as "ns/pod" or an IPv4 address.

The check runners live with what carries them (meshctl.lab.verify, meshctl.agentapi.driver).
"""

from __future__ import annotations

from collections.abc import Mapping
from ipaddress import IPv4Address

from meshctl.apply.gates import CheckLike
from meshctl.errors import ApplyError


def destination_ip(check: CheckLike, pod_ips: Mapping[str, IPv4Address]) -> IPv4Address:
    to = str(check.to)
    try:
        return IPv4Address(to)
    except ValueError:
        pass
    if to not in pod_ips:
        raise ApplyError(f"destination pod {to} does not exist (it has no address in the cluster)")
    return pod_ips[to]
