"""Kernel object names of a lab: netns, veths, pin dirs. One place so up, down and status agree.

Interface names are limited to 15 bytes (IFNAMSIZ - 1); netns names are file names under
/run/netns. Pod and underlay names use a short hash so any pod or node name fits.
"""

from __future__ import annotations

import hashlib
import re
from pathlib import Path

NETNS_DIR = Path("/run/netns")
PIN_ROOT = Path("/sys/fs/bpf/meshctl")
POD_IFNAME = "eth0"  # pod side of the pod veth
NODE_UPLINK = "eth0"  # node side of the underlay veth
BRIDGE = "br0"  # the underlay bridge in the underlay netns
_CLUSTER_RE = re.compile(r"^[a-z0-9]([a-z0-9-]{0,30}[a-z0-9])?$")


def short_hash(text: str) -> str:
    return hashlib.sha256(text.encode()).hexdigest()[:8]


def valid_cluster(name: str) -> bool:
    """Cluster names become parts of netns and pin paths: keep them DNS-label-like and short."""
    return bool(_CLUSTER_RE.match(name))


def prefix(cluster: str) -> str:
    return f"mc-{cluster}-"


def node_netns(cluster: str, node: str) -> str:
    return f"{prefix(cluster)}{node}"


def underlay_netns(cluster: str) -> str:
    return f"{prefix(cluster)}u"


def external_netns(cluster: str) -> str:
    """The external client (outside the cluster, on the underlay), made with kubeProxyReplacement."""
    return f"{prefix(cluster)}ext"


EXTERNAL_PORT = "ulext"  # the external client's bridge port in the underlay netns
HOST_PORT = "ulhost"  # the host link's bridge port in the underlay netns (agents over TCP)


def host_link(cluster: str) -> str:
    """This host's end of its link to the lab underlay (the CLI reaches the agents through it)."""
    return f"mch{short_hash(cluster)}"


def pod_netns(cluster: str, pod: str) -> str:
    """pod is "namespace/name"."""
    return f"{prefix(cluster)}p-{short_hash(pod)}"


def pod_veth(pod: str) -> str:
    """Node-side veth of a pod, named like Cilium's lxc devices."""
    return f"lxc{short_hash(pod)}"


def underlay_port(node: str) -> str:
    """Underlay-side veth of a node (a bridge port in the underlay netns)."""
    return f"ul{short_hash(node)}"


def is_lab_netns(cluster: str, name: str, nodes: set[str]) -> bool:
    """True for a netns name this cluster's lab makes (used to find leftovers after a crash).

    Matching on the prefix alone would also catch cluster `a-b` when removing cluster `a`, so
    the rest of the name must be the underlay, a pod hash, or a known node of this cluster.
    """
    p = prefix(cluster)
    if not name.startswith(p):
        return False
    rest = name[len(p):]
    return rest in ("u", "ext") or bool(re.fullmatch(r"p-[0-9a-f]{8}", rest)) or rest in nodes


def pin_dir(cluster: str) -> Path:
    return PIN_ROOT / cluster
