"""[[lab.externalHosts]]: names Cilium would accept, addresses outside the cluster, one line per error."""

from __future__ import annotations

from ipaddress import IPv4Address
from pathlib import Path

import pytest

from meshctl.errors import ConfigError
from meshctl.source.config import parse_config

BASE = """[cluster]
name = "t-ext-cfg"

[[nodes]]
name = "n1"
podCIDR = "10.1.1.0/24"

[[lab.externalHosts]]
name = "API.Stripe.com."
address = "203.0.113.10"
ports = [443]
ttl = 1
"""


def test_hosts_are_read_with_normalized_names_and_default_ttl() -> None:
    cfg = parse_config(BASE + '[[lab.externalHosts]]\nname = "s3.amazonaws.com"\naddress = "203.0.113.20"\n',
                       Path("/tmp"))
    assert [(h.name, h.address, h.ports, h.ttl) for h in cfg.lab.external_hosts] == [
        ("api.stripe.com", IPv4Address("203.0.113.10"), (443,), 1),
        ("s3.amazonaws.com", IPv4Address("203.0.113.20"), (), 60)]


@pytest.mark.parametrize(("extra", "where", "message"), [
    ('name = "*.x.com"\naddress = "203.0.113.11"\n', "15: lab.externalHosts[1].name", "is not a DNS name"),
    ('name = "api.stripe.com"\naddress = "203.0.113.11"\n', "15: lab.externalHosts[1].name",
     "api.stripe.com is already externalHosts[0]"),
    ('name = "in.pods"\naddress = "10.1.1.7"\n', "16: lab.externalHosts[1].address",
     "10.1.1.7 of external host in.pods is inside the cluster (podCIDR of n1)"),
    ('name = "svc"\naddress = "10.96.3.3"\n', "16: lab.externalHosts[1].address", "(serviceCIDR)"),
    ('name = "u"\naddress = "172.31.250.9"\n', "16: lab.externalHosts[1].address", "underlayCIDR)"),
    ('name = "p"\naddress = "203.0.113.12"\nports = [70000]\n', "17: lab.externalHosts[1].ports[0]",
     "less than or equal to 65535"),
])
def test_bad_hosts_name_file_line_and_key(extra: str, where: str, message: str) -> None:
    with pytest.raises(ConfigError) as err:
        parse_config(BASE + "\n[[lab.externalHosts]]\n" + extra, Path("/tmp"))
    text = str(err.value)
    assert text.startswith(f"meshctl.toml:{where}: ") and message in text and "\n" not in text.strip(), text
