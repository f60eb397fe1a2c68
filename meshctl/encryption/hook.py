"""Glue between the workflow and encryption: settings + node addresses + live state -> targets.

make_plan calls `with_encryption` after observing (one line): the next safe WireGuard step
needs the live public keys and peer lists of every node (compile/encryption.py explains why).
After apply, `known_after_apply` puts the public keys generated on the nodes into the intent
that the state records, so drift compares against real keys.

Node addresses come from meshctl.toml or the lab (meshctl.underlay). With `[apply] driver =
"agent"` the WireGuard reconcile runs inside each node's agent (the same reconcile as the lab's,
on the agent's own netns and key dir); this side only observes through the agents.
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
    from meshctl.access import ClusterAccess
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
    access: ClusterAccess | None = None,
) -> dict[str, NodeState]:
    """`intended` with each node's next WireGuard step (unchanged when encryption never ran).

    `rotate` defaults to the pending rotations recorded in the state dir (rotation.py). Nodes
    outside `observed` are observed through the agents when `access` is theirs, else the lab.
    """
    settings = settings_of(config)
    live = {n: s.encryption for n, s in observed.items()}
    if not settings.enabled and not any(s.encryption.interface or s.encryption.sources
                                        for s in observed.values()):
        return dict(intended)
    nodes = encryption_nodes(config, require=settings.enabled)
    others = [n.name for n in nodes if n.name not in live]
    if others:  # a plan limited to some nodes still needs every node's keys and peers
        if access is not None and access.kind == "agent":  # the lab: cheaper, WireGuard only
            live.update({n: s.encryption for n, s in access.observe_many(others).items()})
        else:
            live.update({n: _observe(config.cluster, n) for n in others})
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


def known_after_apply(cluster: str, applied: Mapping[str, NodeState],
                      access: ClusterAccess | None = None) -> dict[str, NodeState]:
    """Fill public keys that were "known after apply": the lab's nodes share this host's
    public.key files; an agent's node keeps its files to itself, so ask its agent (observe)."""
    out = {}
    for node, state in applied.items():
        enc = state.encryption
        if enc.interface and not enc.public_key:
            if access is not None and access.kind == "agent":
                public = access.observe(node).encryption.public_key
            else:
                public = keys.read_public(key_dir(cluster, node))
            state = replace(state, encryption=replace(enc, public_key=public))
        out[node] = state
    return out
