"""Helpers of the load-balancer lab tests: a packet tap that counts replies reaching a node.

Why a tap and not an nft counter: on receive, "all protocols" AF_PACKET taps run before tc
ingress, while nft's netdev ingress hook runs after it. The load balancer redirects SNAT replies
at tc ingress (bpf_redirect_neigh), so an nft counter never sees them and would count zero in
any mode; a tap sees every packet that arrives on the wire.
"""

from __future__ import annotations

import socket
import struct
from collections.abc import Iterable

from meshctl.lab.netns import entered

ETH_P_ALL, ETH_P_IP = 0x0003, 0x0800
PACKET_OUTGOING = 4


class ReplyTap:
    """Count TCP packets arriving on `ifname` of `netns`: replies (to `client`, or from one of
    `backends` with source port `backend_port`) and the client's own packets."""

    def __init__(self, netns: str, client: str, backends: Iterable[str], backend_port: int,
                 ifname: str = "eth0") -> None:
        self.client = socket.inet_aton(client)
        self.backends = {socket.inet_aton(b) for b in backends}
        self.port = backend_port
        with entered(netns):
            self.sock = socket.socket(socket.AF_PACKET, socket.SOCK_DGRAM, socket.htons(ETH_P_ALL))
        self.sock.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 1 << 22)
        self.sock.bind((ifname, ETH_P_ALL))
        self.sock.setblocking(False)

    def read(self) -> tuple[int, int]:
        """(reply packets that arrived, packets from the client that arrived) since the last read."""
        replies = requests = 0
        while True:
            try:
                pkt, addr = self.sock.recvfrom(65535)
            except BlockingIOError:
                return replies, requests
            if addr[1] != ETH_P_IP or addr[2] == PACKET_OUTGOING or len(pkt) < 24:
                continue
            if pkt[9] != socket.IPPROTO_TCP:
                continue
            src, dst = pkt[12:16], pkt[16:20]
            sport = struct.unpack("!H", pkt[(pkt[0] & 0x0F) * 4:][:2])[0]
            if dst == self.client or (src in self.backends and sport == self.port):
                replies += 1
            elif src == self.client:
                requests += 1

    def close(self) -> None:
        self.sock.close()

    def __enter__(self) -> ReplyTap:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()
