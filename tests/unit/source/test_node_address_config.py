"""`address` under [[nodes]]: optional IPv4 underlay address, errors name file, line and key."""

from __future__ import annotations

from ipaddress import IPv4Address
from pathlib import Path

import pytest

from meshctl.errors import ConfigError
from meshctl.source.config import parse_config

TWO = """[cluster]
name = "t-ad-cfg"

[[nodes]]
name = "n1"
podCIDR = "10.1.1.0/24"
address = "192.0.2.11"

[[nodes]]
name = "n2"
podCIDR = "10.1.2.0/24"
address = {second}
"""


def test_addresses_are_optional_and_kept() -> None:
    cfg = parse_config(TWO.format(second='"192.0.2.12"'), Path("/tmp"))
    assert [(n.name, n.address) for n in cfg.nodes] == [
        ("n1", IPv4Address("192.0.2.11")), ("n2", IPv4Address("192.0.2.12"))]
    without = TWO.replace('address = "192.0.2.11"\n', "").replace("address = {second}\n", "")
    assert [n.address for n in parse_config(without, Path("/tmp")).nodes] == [None, None]


@pytest.mark.parametrize(("second", "message"), [
    ('"192.0.2.11"', "192.0.2.11 of n2 is already the address of n1"),
    ('"10.1.1.9"', "10.1.1.9 of n2 is inside podCIDR 10.1.1.0/24 of n1"),
    ('"10.1.2.1"', "10.1.2.1 of n2 is inside podCIDR 10.1.2.0/24 of n2"),
    ('"10.96.0.1"', "10.96.0.1 of n2 is inside serviceCIDR 10.96.0.0/16"),
    ('"192.0.2.300"', "'192.0.2.300' is not an IPv4 address"),
    ('"192.0.2.0/24"', "'192.0.2.0/24' is not an IPv4 address"),
    ('"fd00::1"', "'fd00::1' is not an IPv4 address"),
    ("3221225996", "is not an IPv4 address (write it as a string"),
    ('"0.0.0.0"', "0.0.0.0 cannot be a node's address"),
])
def test_bad_address_names_file_line_and_key(second: str, message: str) -> None:
    with pytest.raises(ConfigError) as err:
        parse_config(TWO.format(second=second), Path("/tmp"))
    text = str(err.value)
    assert text.startswith("meshctl.toml:12: nodes[1].address: "), text
    assert message in text, text
