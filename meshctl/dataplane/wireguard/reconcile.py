"""Drive a node's WireGuard side from `current` (observed) to `target`, make-before-break.

Order: device up (key created or rotated on the node), peers added/updated, routing rules,
tunnel routes for routed peers (unrouted peers fall back to the lab's plain main-table routes),
strict-mode chain; then the breaks: peers removed, rules removed, device stopped. Every step
is idempotent, so the apply engine can re-run it for revert and crash recovery.
"""

from __future__ import annotations

import logging
from pathlib import Path

from meshctl.dataplane.wireguard import device, keys, routing, strict
from meshctl.dataplane.wireguard.names import interface, key_dir
from meshctl.errors import DataplaneError
from meshctl.nodestate import WireguardState

log = logging.getLogger(__name__)


def reconcile_wireguard(
    cluster: str, node: str, netns: str | None, current: WireguardState, target: WireguardState
) -> None:
    if current == target:
        return
    kdir = key_dir(cluster, node)
    ifname = target.interface or current.interface or interface(cluster, node)
    if target.interface:
        _device(netns, target, current, kdir)
        for key, peer in target.peers.items():
            if current.peers.get(key) != peer or not current.interface:
                args = ["set", ifname, "peer", key, "allowed-ips", ",".join(map(str, peer.allowed_ips)),
                        "persistent-keepalive", str(peer.keepalive or "off")]
                if peer.endpoint:
                    args += ["endpoint", peer.endpoint]
                device.wg(*args)
    for selector in target.sources:
        if selector not in current.sources:
            routing.add_rule(netns, selector)
    _routes(netns, ifname, target)
    if target.strict != current.strict:
        strict.write(netns, target.strict)
    # Break: only now remove what the target no longer has.
    if target.interface and current.interface:
        for key in current.peers:
            if key not in target.peers:
                device.wg("set", ifname, "peer", key, "remove")
    for selector in current.sources:
        if selector not in target.sources:
            routing.del_rule(netns, selector)
    if not target.interface and (current.interface or device.exists(ifname)):
        device.stop(ifname, kdir)
        log.info("node %s: wireguard interface %s removed", node, ifname)


def _device(netns: str | None, target: WireguardState, current: WireguardState, kdir: Path) -> None:
    ifname = target.interface
    device.start(netns, ifname, kdir)
    if not target.public_key:
        # "" = known after apply: first key (reuse the node's key file) or a rotation.
        public = keys.generate(kdir) if current.public_key else keys.ensure(kdir)
        log.info("node key %s for %s", "rotated" if current.public_key else "ready", ifname)
    else:
        public = keys.ensure(kdir)
        if public != target.public_key and keys.restore(kdir, target.public_key):
            public = keys.read_public(kdir)  # a revert of a rotation: back to the previous pair
        if public != target.public_key:
            raise DataplaneError("set key of", ifname, 0,
                                 f"the node's key is {public}, the plan expects {target.public_key}")
    del public  # only the public half is ever handled; the private key stays in its file
    device.wg("set", ifname, "private-key", str(keys.private_path(kdir)),
              "listen-port", str(target.listen_port), "fwmark", str(target.fwmark or "off"))


def _routes(netns: str | None, ifname: str, target: WireguardState) -> None:
    want = set()
    if target.interface:
        for peer in target.peers.values():
            if peer.routed:
                want.update(peer.allowed_ips)
    have = routing.tunnel_routes(netns, ifname) if device.exists(ifname) else set()
    for dst in sorted(want - have):
        routing.add_route(netns, ifname, dst, None)
    for dst in sorted(have - want):
        routing.del_route(netns, dst)
