"""Encryption in the plan: settings + node addresses + live state -> the next WireGuard step.

make_plan calls `with_encryption` after observing (one line): the next safe WireGuard step
needs the live public keys and peer lists of every node (compile/encryption.py explains why).
After apply, `known_after_apply` puts the public keys generated on the nodes into the intent
that the state records, so drift compares against real keys.

Node addresses come from meshctl.toml, or the lab's backend fills them in (meshctl.underlay).
With `[apply] driver = "agent"` the WireGuard reconcile runs inside each node's agent (the same
reconcile as the lab's, on the agent's own netns and key dir); this side only observes.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import replace
from ipaddress import IPv4Address
from typing import TYPE_CHECKING

from meshctl.compile.encryption import EncryptionNode, EncryptionSettings, encryption_targets
from meshctl.dataplane.wireguard import rotation
from meshctl.dataplane.wireguard.names import interface
from meshctl.nodestate import NO_ENCRYPTION, NodeState

if TYPE_CHECKING:
    from meshctl.backend import Backend
    from meshctl.model.config import MeshConfig


def settings_of(config: MeshConfig) -> EncryptionSettings:
    e = config.encryption
    return EncryptionSettings(
        enabled=e.enabled, listen_port=e.listen_port, persistent_keepalive=e.persistent_keepalive,
        strict_mode=e.strict_mode, node_encryption=e.node_encryption,
    )


def lab_nodes(config: MeshConfig) -> list[EncryptionNode]:
    """The config's nodes with their underlay addresses (config order); raises for a node with
    no address (meshctl.underlay: `address` under [[nodes]], else the lab)."""
    return encryption_nodes(config, require=True)


def encryption_nodes(config: MeshConfig, require: bool) -> list[EncryptionNode]:
    """Every node of the config; `require=False` (disabling) lets a node without an address
    through with 0.0.0.0, because the disable steps only unroute and remove what is live."""
    from meshctl.underlay import require_addresses, underlay_addresses

    if require:
        addresses = require_addresses(config, "encryption (WireGuard peer endpoints)")
    else:
        addresses = underlay_addresses(config)
    unknown = IPv4Address(0)
    return [
        EncryptionNode(n.name, n.pod_cidr, addresses.get(n.name, unknown), interface(config.cluster, n.name))
        for n in config.nodes
    ]


def with_encryption(
    config: MeshConfig,
    intended: Mapping[str, NodeState],
    observed: Mapping[str, NodeState],
    rotate: frozenset[str] | None = None,
    backend: Backend | None = None,
) -> dict[str, NodeState]:
    """`intended` with each node's next WireGuard step (unchanged when encryption never ran).

    `rotate` defaults to the pending rotations recorded in the state dir (rotation.py). Nodes
    outside `observed` are read through `backend` (WireGuard only); without one they count as
    having no encryption.
    """
    settings = settings_of(config)
    live = {n: s.encryption for n, s in observed.items()}
    if not settings.enabled and not any(s.encryption.interface or s.encryption.sources
                                        for s in observed.values()):
        return dict(intended)
    nodes = encryption_nodes(config, require=settings.enabled)
    others = [n.name for n in nodes if n.name not in live]
    if others:  # a plan limited to some nodes still needs every node's keys and peers
        unread = dict.fromkeys(others, NO_ENCRYPTION)
        live.update(backend.wireguard(others) if backend is not None else unread)
    if rotate is None:
        rotate = rotation.active(config.state_dir, live)
    targets = encryption_targets(nodes, settings, live, rotate)
    return {n: replace(s, encryption=targets.get(n, s.encryption)) for n, s in intended.items()}


def known_after_apply(applied: Mapping[str, NodeState], backend: Backend) -> dict[str, NodeState]:
    """Fill public keys that were "known after apply": generated on the nodes, read back from
    their live devices (the private key never leaves its node)."""
    unknown = [n for n, s in applied.items() if s.encryption.interface and not s.encryption.public_key]
    live = backend.wireguard(unknown) if unknown else {}
    return {
        node: replace(state, encryption=replace(state.encryption, public_key=live[node].public_key))
        if node in live else state
        for node, state in applied.items()
    }
