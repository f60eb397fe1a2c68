"""Readable names for the numbers of a NodeState, from the catalog, with honest fallbacks.

A deleted object may no longer be in the catalog: peers then show as `identity:N`, endpoints as
their address, so an address is always printable.
"""

from __future__ import annotations

from ipaddress import IPv4Address

from meshctl.catalog import Catalog
from meshctl.nodestate import (
    AUDIT_MAP_BIT,
    PROTO_ANY,
    PROTOCOL_NAMES,
    NodeState,
    PolicyKey,
    ReservedIdentity,
    is_audit_map,
)


def protocol_name(protocol: int) -> str:
    return PROTOCOL_NAMES.get(protocol, f"proto{protocol}")


def ports_label(key: PolicyKey) -> str:
    """`any`, `tcp/*` (all ports), `tcp/3000` or `tcp/8000-8063`."""
    if key.protocol == PROTO_ANY:
        return "any"
    proto = protocol_name(key.protocol)
    assert key.port_range is not None
    lo, hi = key.port_range
    if key.port_prefix == 0:
        return f"{proto}/*"
    if lo == hi:
        return f"{proto}/{lo}"
    return f"{proto}/{lo}-{hi}"


class Namer:
    """Names for one node, looking at both sides of its diff."""

    def __init__(self, catalog: Catalog, node: str, *states: NodeState) -> None:
        self.catalog = catalog
        self.node = node
        self.states = states

    def peer(self, identity: int) -> str:
        if identity == ReservedIdentity.ANY:
            return "any"
        if identity in self.catalog.identities:
            return self.catalog.identity_name(identity)
        if identity < 256 and identity in ReservedIdentity._value2member_map_:
            return f"reserved:{ReservedIdentity(identity).name.lower().replace('_', '-')}"
        return self.catalog.identity_name(identity)

    def endpoint(self, endpoint_id: int) -> str:
        """`ns/pod` for an endpoint id, else the pod its identity names, else `endpoint:N`; an
        endpoint's enforced+staged map (audit_map_id) is `ns/pod (staged)`."""
        if is_audit_map(endpoint_id):
            return f"{self.endpoint(endpoint_id & ~AUDIT_MAP_BIT)} (staged)"
        name = self.catalog.endpoints.get(self.node, {}).get(endpoint_id)
        if name:
            return name
        for state in self.states:
            for ip, entry in state.endpoints.items():
                if entry.endpoint_id == endpoint_id:
                    return self._by_identity(entry.identity) or str(ip)
        return f"endpoint:{endpoint_id}"

    def endpoint_at(self, ip: IPv4Address) -> str:
        for state in self.states:
            entry = state.endpoints.get(ip)
            if entry is not None:
                return self.endpoint(entry.endpoint_id)
        return str(ip)

    def _by_identity(self, identity: int) -> str | None:
        info = self.catalog.identities.get(identity)
        if info is not None and len(info.pods) == 1:
            return info.pods[0]
        return None
