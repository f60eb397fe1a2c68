"""Node underlay addresses: `address` under [[nodes]] in meshctl.toml (the lab fills its own).

Encryption (WireGuard endpoints, nodeEncryption allowed IPs) and the load balancer (NodePort
frontends, the SNAT source) need each node's underlay address, which compile cannot invent.
The lab knows its nodes' addresses (its backend fills them in); a real cluster's nodes (`[apply] driver =
"agent"`) name theirs in meshctl.toml, or the Kubernetes inventory fills them from the Node
objects' InternalIP. A feature that needs an address a node lacks fails with one message
naming the node and the fix, instead of silently leaving the node out.
"""

from __future__ import annotations

from collections.abc import Iterable
from ipaddress import IPv4Address
from typing import TYPE_CHECKING

from meshctl.errors import ConfigError
from meshctl.source.config import CONFIG_FILE

if TYPE_CHECKING:
    from meshctl.model.config import MeshConfig


def underlay_addresses(config: MeshConfig) -> dict[str, IPv4Address]:
    """node -> underlay address, for the nodes that have one (config order). The lab's backend
    fills the addresses of its nodes into the config when a workspace opens (meshctl.backend)."""
    return {n.name: n.address for n in config.nodes if n.address is not None}


class MissingAddressError(ConfigError):
    """A feature needs the underlay address of nodes that have none."""

    def __init__(self, nodes: Iterable[str], feature: str, cluster: str) -> None:
        self.nodes = list(nodes)
        names = ", ".join(self.nodes)
        has = "has" if len(self.nodes) == 1 else "have"
        example = self.nodes[0]
        super().__init__(
            CONFIG_FILE, None, "nodes",
            f"{feature} needs every node's underlay address, and {names} {has} none (no lab of "
            f"{cluster!r} knows it): set address = \"<the node's InternalIP>\" under [[nodes]] "
            f"name = \"{example}\"",
        )


def require_addresses(config: MeshConfig, feature: str) -> dict[str, IPv4Address]:
    """Every node's underlay address, or MissingAddressError naming the nodes without one."""
    found = underlay_addresses(config)
    missing = [n.name for n in config.nodes if n.name not in found]
    if missing:
        raise MissingAddressError(missing, feature, config.cluster)
    return found
