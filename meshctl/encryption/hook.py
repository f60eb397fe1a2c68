"""Glue between the workflow and encryption: settings + lab addresses + live state -> targets.

make_plan calls `with_encryption` after observing (one line): the next safe WireGuard step
needs the live public keys and peer lists of every node (compile/encryption.py explains why).
After apply, `known_after_apply` puts the public keys generated on the nodes into the intent
that the state records, so drift compares against real keys.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import replace
from ipaddress import IPv4Address
from typing import TYPE_CHECKING

from meshctl.compile.encryption import EncryptionNode, EncryptionSettings, encryption_targets
from meshctl.encryption import keys, rotation
from meshctl.encryption.names import interface, key_dir
from meshctl.nodestate import NO_ENCRYPTION, NodeState, WireguardState

if TYPE_CHECKING:
    from meshctl.model.config import MeshConfig


def settings_of(config: MeshConfig) -> EncryptionSettings:
    e = config.encryption
    return EncryptionSettings(
        enabled=e.enabled, listen_port=e.listen_port, persistent_keepalive=e.persistent_keepalive,
        strict_mode=e.strict_mode, node_encryption=e.node_encryption,
    )


def lab_nodes(config: MeshConfig) -> list[EncryptionNode]:
    """The config's nodes with their lab underlay addresses (config order)."""
    from meshctl.lab import registry

    reg = registry.load(config.cluster)
    records = reg.nodes if reg is not None else {}
    out = []
    for n in config.nodes:
        rec = records.get(n.name)
        if rec is None:
            continue
        out.append(EncryptionNode(n.name, n.pod_cidr, IPv4Address(rec.underlay_ip),
                                  interface(config.cluster, n.name)))
    return out


def with_encryption(
    config: MeshConfig,
    intended: Mapping[str, NodeState],
    observed: Mapping[str, NodeState],
    rotate: frozenset[str] | None = None,
) -> dict[str, NodeState]:
    """`intended` with each node's next WireGuard step (unchanged when encryption never ran).

    `rotate` defaults to the pending rotations recorded in the state dir (rotation.py).
    """
    settings = settings_of(config)
    live = {n: s.encryption for n, s in observed.items()}
    if not settings.enabled and not any(s.encryption.interface or s.encryption.sources
                                        for s in observed.values()):
        return dict(intended)
    nodes = lab_nodes(config)
    for n in nodes:  # a plan limited to some nodes still needs every node's keys and peers
        if n.name not in live:
            live[n.name] = _observe(config.cluster, n.name)
    if rotate is None:
        rotate = rotation.active(config.state_dir, live)
    targets = encryption_targets(nodes, settings, live, rotate)
    return {n: replace(s, encryption=targets.get(n, s.encryption)) for n, s in intended.items()}


def _observe(cluster: str, node: str) -> WireguardState:
    from meshctl.lab import registry
    from meshctl.observe.wireguard import observe_wireguard

    reg = registry.load(cluster)
    rec = reg.nodes.get(node) if reg is not None else None
    return observe_wireguard(cluster, node, rec.netns) if rec is not None else NO_ENCRYPTION


def known_after_apply(cluster: str, applied: Mapping[str, NodeState]) -> dict[str, NodeState]:
    """Fill public keys that were "known after apply" from the nodes' public.key files."""
    out = {}
    for node, state in applied.items():
        enc = state.encryption
        if enc.interface and not enc.public_key:
            public = keys.read_public(key_dir(cluster, node))
            state = replace(state, encryption=replace(enc, public_key=public))
        out[node] = state
    return out
