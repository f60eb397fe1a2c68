"""[encryption] in meshctl.toml: defaults as Cilium, unknown keys and bad values are errors."""

from __future__ import annotations

from pathlib import Path

import pytest

from meshctl.errors import ConfigError
from meshctl.source.config import parse_config

BASE = """[cluster]
name = "t"

[[nodes]]
name = "node-1"
podCIDR = "10.1.0.0/24"
"""


def test_defaults() -> None:
    e = parse_config(BASE, Path("/tmp")).encryption
    assert (e.enabled, e.type, e.listen_port, e.persistent_keepalive, e.strict_mode, e.node_encryption) == (
        False, "wireguard", 51871, 0, False, False)


def test_all_keys() -> None:
    text = BASE + ('\n[encryption]\nenabled = true\ntype = "wireguard"\nlistenPort = 51000\n'
                   "persistentKeepalive = 25\nstrictMode = true\nnodeEncryption = true\n")
    e = parse_config(text, Path("/tmp")).encryption
    assert (e.enabled, e.listen_port, e.persistent_keepalive, e.strict_mode, e.node_encryption) == (
        True, 51000, 25, True, True)


@pytest.mark.parametrize(("extra", "where"), [
    ("enabled = true\nstrict = true\n", "meshctl.toml:10: encryption.strict:"),
    ('type = "ipsec"\n', "meshctl.toml:9: encryption.type:"),
    ("listenPort = 70000\n", "meshctl.toml:9: encryption.listenPort:"),
    ("persistentKeepalive = -1\n", "meshctl.toml:9: encryption.persistentKeepalive:"),
])
def test_errors_name_file_line_and_key(extra: str, where: str) -> None:
    with pytest.raises(ConfigError) as err:
        parse_config(BASE + "\n[encryption]\n" + extra, Path("/tmp"))
    assert str(err.value).startswith(where), str(err.value)
