"""`[apply]` in meshctl.toml: which driver apply uses; unknown keys stay errors."""

from __future__ import annotations

from pathlib import Path

import pytest

from meshctl.errors import ConfigError
from meshctl.source import parse_config

BASE = '[cluster]\nname = "t-go2-cfg"\n[[nodes]]\nname = "n1"\npodCIDR = "10.1.0.0/24"\n'


def test_default_driver_is_the_lab() -> None:
    section = parse_config(BASE, Path("/tmp")).apply
    assert (section.driver, section.socket_dir) == ("lab", None)


def test_agent_driver_with_socket_dir() -> None:
    section = parse_config(BASE + '[apply]\ndriver = "agent"\nsocketDir = "/run/x"\n', Path("/tmp")).apply
    assert (section.driver, section.socket_dir) == ("agent", "/run/x")


def test_unknown_key_and_bad_driver_name_the_line() -> None:
    with pytest.raises(ConfigError, match=r"meshctl.toml:7: apply.drivr: unknown field"):
        parse_config(BASE + '[apply]\ndrivr = "agent"\n', Path("/tmp"))
    with pytest.raises(ConfigError, match=r"apply.driver: 'ssh' is not allowed"):
        parse_config(BASE + '[apply]\ndriver = "ssh"\n', Path("/tmp"))


def test_agents_over_tcp_need_mutual_tls_unless_insecure() -> None:
    base = '[cluster]\nname = "x"\n[[nodes]]\nname = "n1"\npodCIDR = "10.1.0.0/24"\n[agents]\nport = 4250\n'
    with pytest.raises(ConfigError) as err:
        parse_config(base + 'ca = "pki/ca.crt"\n', Path("/repo"))
    assert str(err.value) == ("meshctl.toml:6: agents: over TCP the agents need mutual TLS: set cert, key "
                              "(or insecure = true, for a lab only)")
    tls = parse_config(base + 'ca = "pki/ca.crt"\ncert = "c.crt"\nkey = "c.key"\n', Path("/repo")).agents
    assert (tls.port, tls.ca, tls.key) == (4250, Path("/repo/pki/ca.crt"), Path("/repo/c.key"))
    assert not tls.insecure
    assert parse_config(base + "insecure = true\n", Path("/repo")).agents.insecure
