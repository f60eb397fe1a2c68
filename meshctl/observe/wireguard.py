"""Observe a node's WireGuard side into the WireguardState of its NodeState.

Reads the live device (`wg show IFACE dump`, private key dropped by the parser), the routes and
rules of the tunnel table, and the strict-mode chain. Cheap when encryption is off: one stat of
the UAPI socket and one `ip rule` call.
"""

from __future__ import annotations

from meshctl.dataplane.wireguard import device, routing, strict
from meshctl.dataplane.wireguard.names import interface
from meshctl.nodestate import NO_ENCRYPTION, FrozenMap, WireguardPeer, WireguardState


def observe_wireguard(cluster: str, node: str, netns: str | None) -> WireguardState:
    """The live WireguardState; NO_ENCRYPTION when nothing of ours is on the node."""
    ifname = interface(cluster, node)
    dump = device.show(ifname)
    sources = routing.rules(netns)
    if dump is None and not sources:
        return NO_ENCRYPTION
    dropped = strict.read(netns)
    if dump is None:
        return WireguardState(sources=sources, strict=dropped)
    routed = routing.tunnel_routes(netns, ifname)
    peers = {
        p.public_key: WireguardPeer(
            endpoint=p.endpoint,
            allowed_ips=p.allowed_ips,
            keepalive=p.keepalive,
            routed=bool(p.allowed_ips) and all(a in routed for a in p.allowed_ips),
        )
        for p in dump.peers
    }
    return WireguardState(
        interface=ifname,
        public_key=dump.public_key,
        listen_port=dump.listen_port,
        fwmark=dump.fwmark,
        peers=FrozenMap(peers),
        sources=sources,
        strict=dropped,
    )
