"""Names and numbers of the WireGuard side of a node: interface, key dir, routing table.

The UAPI socket /var/run/wireguard/<ifname>.sock is shared by every netns on the host, so the
interface name carries a hash of cluster and node: two clusters with a `node-1` never collide.
"""

from __future__ import annotations

import hashlib
import os
from pathlib import Path

IFNAMSIZ = 15
DEFAULT_PORT = 51871  # Cilium's wireguard listen port
TABLE = 201  # routing table holding the routes into the tunnel
RULE_PREF = 1000  # before the main table (32766)
FWMARK = 0xE57  # marks wireguard-go's own UDP so nodeEncryption never loops it into the tunnel
STRICT_CHAIN = "MESHCTL-WG-STRICT"
UAPI_DIR = Path("/var/run/wireguard")


def interface(cluster: str, node: str) -> str:
    """`mwg-<node[:6]>-<hash4>`: at most 15 bytes and unique per (cluster, node)."""
    digest = hashlib.sha256(f"{cluster}/{node}".encode()).hexdigest()[:4]
    name = f"mwg-{node[:6]}-{digest}"
    assert len(name) <= IFNAMSIZ
    return name


def state_root() -> Path:
    """Node-local directory root (override with MESHCTL_NODE_DIR, e.g. in tests)."""
    return Path(os.environ.get("MESHCTL_NODE_DIR", "/var/lib/meshctl"))


def key_dir(cluster: str, node: str) -> Path:
    return state_root() / cluster / node / "wireguard"


def uapi_socket(ifname: str) -> Path:
    return UAPI_DIR / f"{ifname}.sock"
