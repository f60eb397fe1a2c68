"""Which pods, namespaces and addresses both revisions are judged against.

The choice (documented in `meshctl impact --help`): the HEAD revision's inventory, so the
question is "what does the policy change do to the workloads we will have". Pod addresses come,
in order: from the cluster when `[inventory] source = "kubernetes"`; from the lab when it is up
(so recorded flows line up with pods); else each pod without an address gets one from its
node's podCIDR, in sorted pod order (used only inside the emulation, never applied).
"""

from __future__ import annotations

import dataclasses
from collections.abc import Mapping
from ipaddress import IPv4Address
from typing import Any

from meshctl.backend.lab import lab_pod_ips as pod_ips

SYNTHETIC_FIRST_HOST = 10  # skip the low addresses the lab gives gateways


def synthesize_ips(desired: Any) -> dict[str, IPv4Address]:
    """Addresses for pods lacking one, from their node's podCIDR, avoiding those already taken."""
    taken = {p.pod_ip for p in desired.pods if p.pod_ip is not None}
    cidrs = {n.name: n.pod_cidr for n in desired.config.nodes}
    cursor: dict[str, int] = {}
    out: dict[str, IPv4Address] = {}
    for pod in sorted(desired.pods, key=lambda p: p.key):
        cidr = cidrs.get(pod.node_name)
        if pod.pod_ip is not None or cidr is None:
            continue
        i = cursor.get(pod.node_name, SYNTHETIC_FIRST_HOST)
        while i < cidr.num_addresses - 1:
            addr = cidr.network_address + i
            i += 1
            if addr not in taken:
                out[pod.key] = addr
                taken.add(addr)
                break
        cursor[pod.node_name] = i
    return out


def resolve_inventory(head: Any, use_lab: bool = True) -> tuple[Any, str]:
    """(head DesiredState with the chosen inventory and addresses, a sentence saying where from)."""
    source = getattr(getattr(head.config, "inventory", None), "source", "repo")
    if source == "kubernetes":
        from meshctl.source.kubernetes import inventory_from_config

        inv = inventory_from_config(head.config.inventory, head.root, head.config.cluster)
        head = inv.apply_to(head)
        where = f"cluster inventory ({len(inv.pods)} pods from the Kubernetes API)"
    else:
        where = "head revision's inventory"
    lab = pod_ips(head.config.cluster) if use_lab else None
    if lab:
        head = head.with_pod_ips(lab)
        where += f"; addresses from the running lab {head.config.cluster!r}"
    missing = synthesize_ips(head)
    if missing:
        head = head.with_pod_ips(missing)
        where += f"; {len(missing)} pod address(es) assigned from the node podCIDRs"
    return head, where


def with_inventory(desired: Any, inventory: Any) -> Any:
    """`desired` (policies and config of one revision) over another revision's pods/namespaces."""
    return dataclasses.replace(desired, namespaces=inventory.namespaces, pods=inventory.pods)


def replay_addresses(addresses: Mapping[str, Any], src: str, dst: str,
                     newest: Any) -> tuple[IPv4Address, IPv4Address] | None:
    """The ends of a recorded flow now: pods by name in the inventory, else the recorded address."""
    try:
        return (IPv4Address(addresses.get(src) or newest.src_ip),
                IPv4Address(addresses.get(dst) or newest.dst_ip))
    except ValueError:
        return None
