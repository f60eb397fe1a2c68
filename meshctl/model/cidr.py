"""IPv4 CIDRs as written in policies: parsed once, with a message that names the bad value.

The datapath is IPv4-only (IPv6 is dropped or passed as a whole, see datapath.ipv6), so an
IPv6 prefix in a policy is an error rather than a rule that would silently never match.
"""

from __future__ import annotations

from ipaddress import IPv4Network, IPv6Network, ip_network
from typing import Annotated, Any

from pydantic import BeforeValidator


def _parse(value: Any, *, bare_ip: bool) -> IPv4Network:
    if isinstance(value, IPv4Network):
        return value
    if not isinstance(value, str):
        raise ValueError(f"{value!r} is not a CIDR (write it as a string like 10.0.0.0/8)")
    if "/" not in value and not bare_ip:
        raise ValueError(f"{value!r} is not a CIDR: add a prefix length, e.g. {value}/32")
    try:
        net = ip_network(value, strict=False)
    except ValueError:
        raise ValueError(f"{value!r} is not a valid CIDR") from None
    if isinstance(net, IPv6Network):
        raise ValueError(f"{value!r} is IPv6: policies are IPv4-only (see datapath.ipv6 in meshctl.toml)")
    return net


def parse_k8s_cidr(value: Any) -> IPv4Network:
    """ipBlock cidr/except: CIDR notation required; host bits are masked like Kubernetes does."""
    return _parse(value, bare_ip=False)


def parse_cilium_cidr(value: Any) -> IPv4Network:
    """fromCIDR/toCIDR/cidr: a prefix or a bare address (= /32), as Cilium accepts."""
    return _parse(value, bare_ip=True)


K8sCidr = Annotated[IPv4Network, BeforeValidator(parse_k8s_cidr)]
CiliumCidr = Annotated[IPv4Network, BeforeValidator(parse_cilium_cidr)]


def check_excepts(cidr: IPv4Network, excepts: tuple[IPv4Network, ...] | None) -> None:
    """Every `except` prefix must lie inside its `cidr` (Kubernetes and Cilium both require it)."""
    for sub in excepts or ():
        if not sub.subnet_of(cidr):
            raise ValueError(f"except {sub} is not inside cidr {cidr}")
