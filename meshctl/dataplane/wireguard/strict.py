"""strictMode: drop unencrypted pod traffic leaving a node towards another node's pods.

Like Cilium's strict mode (egress, pod to pod), done with one iptables chain in the node netns:
FORWARD jumps to STRICT_CHAIN, which drops forwarded (pod) packets to each peer pod CIDR that
leave on the underlay uplink in the clear. Encrypted traffic leaves as UDP between
underlay addresses and never matches. Simplest real mechanism here: no datapath change.
"""

from __future__ import annotations

import subprocess
from ipaddress import IPv4Network

from meshctl.dataplane.wireguard.names import STRICT_CHAIN
from meshctl.errors import DataplaneError

UPLINK = "eth0"  # the node's underlay device in the lab


def _ipt(netns: str | None, *args: str, check: bool = True) -> subprocess.CompletedProcess[str]:
    argv = ["iptables", "-w", *args]
    if netns:
        argv = ["nsenter", f"--net=/run/netns/{netns}", "--", *argv]
    proc = subprocess.run(argv, capture_output=True, text=True)
    if check and proc.returncode != 0:
        raise DataplaneError("iptables " + " ".join(args[:2]), netns or "root netns", 0, proc.stderr.strip())
    return proc


def read(netns: str | None) -> tuple[IPv4Network, ...]:
    """Peer CIDRs dropped in the clear; () when the chain is absent or not hooked."""
    hooked = _ipt(netns, "-C", "FORWARD", "-j", STRICT_CHAIN, check=False).returncode == 0
    chain = _ipt(netns, "-S", STRICT_CHAIN, check=False)
    if not hooked or chain.returncode != 0:
        return ()
    return parse_rules(chain.stdout)


def parse_rules(text: str) -> tuple[IPv4Network, ...]:
    """Destinations of `-A CHAIN ... -d X ... -j DROP` lines of `iptables -S CHAIN`."""
    out = []
    for line in text.splitlines():
        parts = line.split()
        if parts[:2] == ["-A", STRICT_CHAIN] and "-d" in parts and parts[-2:] == ["-j", "DROP"]:
            out.append(IPv4Network(parts[parts.index("-d") + 1]))
    return tuple(sorted(out))


def write(netns: str | None, peers: tuple[IPv4Network, ...]) -> None:
    """Make the chain hold exactly `peers` (empty: unhook and delete it)."""
    if not peers:
        _ipt(netns, "-D", "FORWARD", "-j", STRICT_CHAIN, check=False)
        _ipt(netns, "-F", STRICT_CHAIN, check=False)
        _ipt(netns, "-X", STRICT_CHAIN, check=False)
        return
    if _ipt(netns, "-N", STRICT_CHAIN, check=False).returncode != 0:
        _ipt(netns, "-F", STRICT_CHAIN)
    for dst in peers:
        _ipt(netns, "-A", STRICT_CHAIN, "-d", str(dst), "-o", UPLINK, "-j", "DROP")
    if _ipt(netns, "-C", "FORWARD", "-j", STRICT_CHAIN, check=False).returncode != 0:
        _ipt(netns, "-I", "FORWARD", "1", "-j", STRICT_CHAIN)
