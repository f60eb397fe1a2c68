"""Remove a node's WireGuard side when its lab goes away: the process, its socket, its keys.

Deleting a node netns does not stop wireguard-go (the process keeps the netns alive), so
`lab down` calls `remove_node` for every node; it stops only the pid recorded for that node.
"""

from __future__ import annotations

import shutil

from meshctl.dataplane.wireguard import device
from meshctl.dataplane.wireguard.names import interface, key_dir


def remove_node(cluster: str, node: str, keep_keys: bool = False) -> bool:
    """Stop the node's wireguard-go; drop its key dir unless asked to keep it. True if one ran."""
    ifname = interface(cluster, node)
    kdir = key_dir(cluster, node)
    ran = device.running_pid(ifname, kdir) is not None
    device.stop(ifname, kdir)
    if not keep_keys:
        shutil.rmtree(kdir, ignore_errors=True)
        parent = kdir.parent
        if parent.exists() and not any(parent.iterdir()):
            parent.rmdir()
    return ran


def remove_cluster(cluster: str, nodes: set[str]) -> None:
    for node in sorted(nodes):
        remove_node(cluster, node)
    root = key_dir(cluster, "x").parent.parent
    if root.exists() and not any(root.iterdir()):
        root.rmdir()
