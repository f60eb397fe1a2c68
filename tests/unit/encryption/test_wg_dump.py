"""`wg show dump` and `iptables -S` parsing on recorded outputs (pure, no kernel)."""

from __future__ import annotations

from ipaddress import IPv4Network
from pathlib import Path

import pytest

from meshctl.dataplane.wireguard.dump import parse_dump
from meshctl.dataplane.wireguard.names import IFNAMSIZ, interface
from meshctl.dataplane.wireguard.strict import parse_rules
from meshctl.errors import DataplaneError

DATA = Path(__file__).parent / "data"
PRIVATE = "ZZZZprivatekeyZZZZZZZZZZZZZZZZZZZZZZZZZZZZZ="


def test_dump_with_two_peers() -> None:
    d = parse_dump((DATA / "two_peers.dump").read_text())
    assert d.public_key == "aTERFwvEYX2IRAK3226QIDQEXON0JtlfS2G9do/Ligg="
    assert (d.listen_port, d.fwmark) == (51871, 0xE57)
    first, second = d.peers
    assert first.endpoint == "172.31.250.2:51871"
    assert first.allowed_ips == (IPv4Network("10.1.0.0/24"), IPv4Network("172.31.250.2/32"))
    counters = (first.latest_handshake, first.rx_bytes, first.tx_bytes, first.keepalive)
    assert counters == (1764155000, 1184, 2296, 5)
    assert (second.endpoint, second.allowed_ips, second.keepalive) == ("", (), 0)


def test_dump_never_keeps_the_private_key() -> None:
    for name in ("two_peers.dump", "fresh.dump"):
        d = parse_dump((DATA / name).read_text())
        assert PRIVATE not in repr(d)


def test_fresh_interface_has_no_key_and_no_fwmark() -> None:
    d = parse_dump((DATA / "fresh.dump").read_text())
    assert (d.public_key, d.listen_port, d.fwmark, d.peers) == ("", 0, 0, ())


@pytest.mark.parametrize("text", ["", "a\tb\n", "a\tb\tc\td\nonly\tthree\tfields\n"])
def test_malformed_dump_is_a_dataplane_error(text: str) -> None:
    with pytest.raises(DataplaneError):
        parse_dump(text, "mwg-x")


def test_strict_chain_rules() -> None:
    text = (
        "-N MESHCTL-WG-STRICT\n"
        "-A MESHCTL-WG-STRICT -d 10.2.0.0/24 -o eth0 -j DROP\n"
        "-A MESHCTL-WG-STRICT -d 10.3.0.0/24 -o eth0 -j DROP\n"
        "-A OTHER -d 10.9.0.0/24 -j DROP\n"
    )
    assert parse_rules(text) == (IPv4Network("10.2.0.0/24"), IPv4Network("10.3.0.0/24"))


def test_interface_names_fit_and_differ_per_cluster() -> None:
    a, b = interface("t-wg-a", "node-1"), interface("t-wg-b", "node-1")
    assert a != b
    assert a.startswith("mwg-node-1")
    assert len(interface("c", "a-very-long-node-name-indeed")) <= IFNAMSIZ
