"""meshctl.dataplane.frames builds valid frames: the datapath tests depend on their layout."""

from __future__ import annotations

import struct
from ipaddress import IPv4Address

from meshctl.dataplane import frames


def _ip_and_l4(frame: bytes) -> tuple[bytes, bytes]:
    assert struct.unpack("!H", frame[12:14])[0] == frames.ETH_P_IP
    ip = frame[14:34]
    return ip, frame[34:]


def test_ipv4_header_checksum_and_addresses() -> None:
    frame = frames.udp_frame("10.0.1.1", "10.0.1.2", 40000, 53, b"abc")
    ip, l4 = _ip_and_l4(frame)
    assert frames.checksum(ip) == 0
    assert ip[9] == frames.IPPROTO_UDP
    assert IPv4Address(ip[12:16]) == IPv4Address("10.0.1.1")
    assert struct.unpack("!H", ip[2:4])[0] == 20 + 8 + 3
    assert struct.unpack("!HHH", l4[:6]) == (40000, 53, 11)


def test_tcp_checksum_verifies_with_pseudo_header() -> None:
    frame = frames.tcp_frame("10.0.1.1", "10.0.1.2", 40000, 80, frames.TCP_SYN | frames.TCP_ACK)
    ip, seg = _ip_and_l4(frame)
    pseudo = ip[12:20] + struct.pack("!BBH", 0, frames.IPPROTO_TCP, len(seg))
    assert frames.checksum(pseudo + seg) == 0
    assert seg[13] == frames.TCP_SYN | frames.TCP_ACK
    assert struct.unpack("!HH", seg[:4]) == (40000, 80)


def test_icmp_echo_carries_id_and_type() -> None:
    req = frames.icmp_echo_frame("10.0.1.1", "192.0.2.1", ident=0x1234, seq=7)
    rep = frames.icmp_echo_frame("192.0.2.1", "10.0.1.1", ident=0x1234, seq=7, reply=True)
    _, icmp = _ip_and_l4(req)
    assert (icmp[0], struct.unpack("!HH", icmp[4:8])) == (frames.ICMP_ECHO, (0x1234, 7))
    assert frames.checksum(icmp) == 0
    assert _ip_and_l4(rep)[1][0] == frames.ICMP_ECHOREPLY


def test_truncated_tcp_is_shorter_than_a_header() -> None:
    _, l4 = _ip_and_l4(frames.truncated_tcp_frame("10.0.1.1", "10.0.1.2"))
    assert len(l4) < 20


def test_arp_and_ipv6_ethertypes() -> None:
    arp = frames.arp_request_frame("10.0.1.1", "10.0.1.2")
    assert struct.unpack("!H", arp[12:14])[0] == frames.ETH_P_ARP and arp[:6] == b"\xff" * 6
    v6 = frames.ipv6_udp_frame("fd00::1", "fd00::2", 1, 2)
    assert struct.unpack("!H", v6[12:14])[0] == frames.ETH_P_IPV6
    assert v6[14] >> 4 == 6 and v6[20] == frames.IPPROTO_UDP
