"""Synthetic Ethernet frames for BPF_PROG_TEST_RUN: IPv4 TCP/UDP/ICMP, IPv6, ARP.

Pure Python, no kernel: the datapath tests and the benchmark share these builders, so a frame
in a test is byte for byte the frame the benchmark measures. Checksums are filled in (the
datapath does not check them, but the frames stay valid for tcpdump and for real sockets).
"""

from __future__ import annotations

import struct
from ipaddress import IPv4Address, IPv6Address

ETH_P_IP = 0x0800
ETH_P_ARP = 0x0806
ETH_P_IPV6 = 0x86DD

IPPROTO_ICMP = 1
IPPROTO_TCP = 6
IPPROTO_UDP = 17

ICMP_ECHOREPLY = 0
ICMP_ECHO = 8

TCP_FIN = 0x01
TCP_SYN = 0x02
TCP_RST = 0x04
TCP_PSH = 0x08
TCP_ACK = 0x10

IP_MF = 0x2000  # more fragments (flags field)

POD_MAC = bytes.fromhex("02000000aa01")
NODE_MAC = bytes.fromhex("02000000bb01")


def checksum(data: bytes) -> int:
    """The Internet checksum (RFC 1071)."""
    if len(data) % 2:
        data += b"\0"
    total = sum(struct.unpack(f"!{len(data) // 2}H", data))
    while total >> 16:
        total = (total & 0xFFFF) + (total >> 16)
    return ~total & 0xFFFF


def ethernet(payload: bytes, ethertype: int, src: bytes = POD_MAC, dst: bytes = NODE_MAC) -> bytes:
    return dst + src + struct.pack("!H", ethertype) + payload


def ipv4_packet(src: str, dst: str, protocol: int, l4: bytes, ttl: int = 64, frag: int = 0,
                ident: int = 1) -> bytes:
    """An IPv4 header (no options) followed by l4; frag is the flags+offset field."""
    s, d = IPv4Address(src).packed, IPv4Address(dst).packed
    hdr = struct.pack("!BBHHHBBH4s4s", 0x45, 0, 20 + len(l4), ident, frag, ttl, protocol, 0, s, d)
    hdr = hdr[:10] + struct.pack("!H", checksum(hdr)) + hdr[12:]
    return hdr + l4


def _pseudo(src: str, dst: str, protocol: int, length: int) -> bytes:
    return IPv4Address(src).packed + IPv4Address(dst).packed + struct.pack("!BBH", 0, protocol, length)


def tcp_segment(src: str, dst: str, sport: int, dport: int, flags: int, seq: int = 1, ack: int = 0,
                payload: bytes = b"") -> bytes:
    hdr = struct.pack("!HHIIBBHHH", sport, dport, seq, ack, 5 << 4, flags, 65535, 0, 0)
    csum = checksum(_pseudo(src, dst, IPPROTO_TCP, len(hdr) + len(payload)) + hdr + payload)
    return hdr[:16] + struct.pack("!H", csum) + hdr[18:] + payload


def udp_datagram(src: str, dst: str, sport: int, dport: int, payload: bytes = b"") -> bytes:
    length = 8 + len(payload)
    hdr = struct.pack("!HHHH", sport, dport, length, 0)
    csum = checksum(_pseudo(src, dst, IPPROTO_UDP, length) + hdr + payload) or 0xFFFF
    return hdr[:6] + struct.pack("!H", csum) + payload


def icmp_message(icmp_type: int, code: int = 0, ident: int = 0, seq: int = 0, payload: bytes = b"") -> bytes:
    body = struct.pack("!BBHHH", icmp_type, code, 0, ident, seq) + payload
    return body[:2] + struct.pack("!H", checksum(body)) + body[4:]


def tcp_frame(src: str, dst: str, sport: int, dport: int, flags: int = TCP_SYN,
              payload: bytes = b"") -> bytes:
    """Ethernet + IPv4 + TCP with the given flags (default: a SYN)."""
    return ethernet(ipv4_packet(src, dst, IPPROTO_TCP, tcp_segment(src, dst, sport, dport, flags,
                                                                   payload=payload)), ETH_P_IP)


def udp_frame(src: str, dst: str, sport: int, dport: int, payload: bytes = b"") -> bytes:
    return ethernet(ipv4_packet(src, dst, IPPROTO_UDP, udp_datagram(src, dst, sport, dport, payload)),
                    ETH_P_IP)


def icmp_echo_frame(src: str, dst: str, ident: int, seq: int = 1, reply: bool = False) -> bytes:
    """An ICMP echo request (or reply): the datapath tracks it by the echo id."""
    msg = icmp_message(ICMP_ECHOREPLY if reply else ICMP_ECHO, 0, ident, seq, b"meshctl-ping")
    return ethernet(ipv4_packet(src, dst, IPPROTO_ICMP, msg), ETH_P_IP)


def icmp_frame(src: str, dst: str, icmp_type: int, code: int = 0) -> bytes:
    return ethernet(ipv4_packet(src, dst, IPPROTO_ICMP, icmp_message(icmp_type, code)), ETH_P_IP)


def truncated_tcp_frame(src: str, dst: str) -> bytes:
    """IPv4 says TCP but only 4 bytes of the TCP header follow: the datapath must drop it."""
    ip = ipv4_packet(src, dst, IPPROTO_TCP, b"\x00\x50\x00\x50")
    return ethernet(ip, ETH_P_IP)


def arp_request_frame(sender: str, target: str) -> bytes:
    body = struct.pack("!HHBBH6s4s6s4s", 1, ETH_P_IP, 6, 4, 1, POD_MAC, IPv4Address(sender).packed,
                       b"\0" * 6, IPv4Address(target).packed)
    return ethernet(body, ETH_P_ARP, dst=b"\xff" * 6)


def ipv6_udp_frame(src: str, dst: str, sport: int, dport: int, payload: bytes = b"") -> bytes:
    udp = struct.pack("!HHHH", sport, dport, 8 + len(payload), 0) + payload
    hdr = struct.pack("!IHBB16s16s", 6 << 28, len(udp), IPPROTO_UDP, 64, IPv6Address(src).packed,
                      IPv6Address(dst).packed)
    return ethernet(hdr + udp, ETH_P_IPV6)
