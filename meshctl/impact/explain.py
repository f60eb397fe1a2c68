"""The rules that decide one connection's verdict under one compile, in words for reviewers."""

from __future__ import annotations

from collections.abc import Mapping
from ipaddress import IPv4Address
from typing import Any

from meshctl.nodestate import PROTO_SCTP, PROTO_TCP, PROTO_UDP, NodeState

PROTOCOLS = {"tcp": PROTO_TCP, "udp": PROTO_UDP, "sctp": PROTO_SCTP}


def side_rules(
    nodes: Mapping[str, NodeState], catalog: Any, src: str, src_ip: IPv4Address, dst: str,
    dst_ip: IPv4Address, protocol: str | int, port: int,
) -> tuple[str, ...]:
    """Allowing rules when forwarded, refusing ones (or the isolating policies) when dropped."""
    from meshctl.plan.impact import _normalize, _rules
    from meshctl.verdicts import connection_verdict

    proto = PROTOCOLS.get(protocol, PROTO_TCP) if isinstance(protocol, str) else protocol
    result = connection_verdict(nodes, src_ip, dst_ip, proto, port)
    rules = _rules(_normalize(result), src, dst, catalog)
    if rules:
        return rules
    if result.allowed:
        return (f"not enforced: no policy isolates {src} egress or {dst} ingress",)
    return ("dropped",)
