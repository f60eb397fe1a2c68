"""Parse `wg show IFACE dump` (pyinfra-style: the read is elsewhere, this is pure).

The first line is the interface: private key, public key, listen port, fwmark. The private key
is dropped here, at the first moment it is seen, and never stored. Each further line is a peer:
public key, preshared key, endpoint, allowed IPs (comma-separated), latest handshake, rx, tx,
persistent keepalive (`off` or seconds).
"""

from __future__ import annotations

from dataclasses import dataclass
from ipaddress import IPv4Network

from meshctl.errors import DataplaneError


@dataclass(frozen=True)
class DumpPeer:
    public_key: str
    endpoint: str  # "" when none
    allowed_ips: tuple[IPv4Network, ...]
    latest_handshake: int
    rx_bytes: int
    tx_bytes: int
    keepalive: int  # 0 = off


@dataclass(frozen=True)
class Dump:
    public_key: str  # "" when no private key is set
    listen_port: int
    fwmark: int
    peers: tuple[DumpPeer, ...]


def _none(text: str) -> str:
    return "" if text in ("(none)", "") else text


def parse_dump(text: str, ifname: str = "") -> Dump:
    """A Dump from the output of `wg show IFACE dump` (one interface)."""
    lines = [line for line in text.splitlines() if line.strip()]
    if not lines:
        raise DataplaneError("parse wg dump of", ifname or "interface", 0, "empty output")
    head = lines[0].split("\t")
    if len(head) != 4:
        raise DataplaneError("parse wg dump of", ifname or "interface", 0,
                             f"interface line has {len(head)} fields, expected 4")
    _private, public, port, fwmark = head
    del _private
    peers = []
    for number, line in enumerate(lines[1:], start=2):
        f = line.split("\t")
        if len(f) != 8:
            raise DataplaneError("parse wg dump of", ifname or "interface", 0,
                                 f"line {number}: {len(f)} fields, expected 8")
        allowed = tuple(IPv4Network(a) for a in _none(f[3]).split(",") if a and ":" not in a)
        peers.append(DumpPeer(
            public_key=f[0], endpoint=_none(f[2]), allowed_ips=tuple(sorted(allowed)),
            latest_handshake=int(f[4]), rx_bytes=int(f[5]), tx_bytes=int(f[6]),
            keepalive=0 if f[7] == "off" else int(f[7]),
        ))
    return Dump(
        public_key=_none(public),
        listen_port=int(port),
        fwmark=0 if fwmark == "off" else int(fwmark, 0),
        peers=tuple(peers),
    )
