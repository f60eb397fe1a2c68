"""Attaching the eBPF datapath on every pod veth, through meshctl.dataplane.node.NodeDatapath.

The binding lands in parallel with the lab; until meshctl/dataplane/node.py and the compiled
object exist, the lab builds the network alone and says so on stderr.
"""

from __future__ import annotations

import importlib
import logging
import shutil
from ipaddress import IPv4Address
from typing import Any

from meshctl.lab import names

log = logging.getLogger(__name__)


def available() -> bool:
    """True when the binding can be imported (the object is checked by ensure_loaded)."""
    try:
        importlib.import_module("meshctl.dataplane.node")
    except ImportError:
        return False
    return True


def node_datapath(cluster: str, node: str, netns: str) -> Any:
    from meshctl.dataplane.node import NodeDatapath

    return NodeDatapath(cluster, node, netns)


def attach_node(cluster: str, node: str, netns: str, veths: dict[str, IPv4Address]) -> None:
    """Load (once) and attach on every pod veth of the node: ifname -> endpoint IP."""
    dp = node_datapath(cluster, node, netns)
    dp.ensure_loaded()
    for ifname, ip in sorted(veths.items()):
        dp.attach(ifname, ip)


def detach(cluster: str, node: str, netns: str, ifname: str) -> None:
    if available():
        node_datapath(cluster, node, netns).detach(ifname)


def remove_node(cluster: str, node: str, netns: str) -> None:
    if available():
        try:
            node_datapath(cluster, node, netns).remove()
        except Exception as err:  # the pin dir is removed below anyway
            log.debug("datapath remove of %s failed: %s", node, err)
    shutil.rmtree(names.pin_dir(cluster) / node, ignore_errors=True)


def remove_cluster(cluster: str) -> None:
    shutil.rmtree(names.pin_dir(cluster), ignore_errors=True)
