"""[dns] of meshctl.toml: the DNS proxies' settings, carried to the nodes in their fqdn tables."""

from __future__ import annotations

from pathlib import Path

import pytest

from meshctl.catalog import Catalog
from meshctl.compile.spec import dns_settings
from meshctl.errors import ConfigError
from meshctl.nodestate import DNS_MIN_TTL, DNS_NXDOMAIN, FrozenMap, NodeState
from meshctl.plan import codec
from meshctl.plan.diff import diff_node
from meshctl.plan.patch import apply_changes
from meshctl.source.config import parse_config

BASE = """[cluster]
name = "t-dns-cfg"

[[nodes]]
name = "n1"
podCIDR = "10.1.1.0/24"
"""


def test_settings_are_read_and_defaults_leave_the_fqdn_table_as_it_was() -> None:
    cfg = parse_config(BASE + '\n[dns]\nminTTL = 30\nrejectResponseCode = "nameError"\n', Path("/tmp"))
    assert (cfg.dns.min_ttl, cfg.dns.reject_response_code) == (30, "nameError")
    assert dns_settings(cfg.dns) == ((DNS_MIN_TTL, 30), (DNS_NXDOMAIN, 1))
    assert dns_settings(parse_config(BASE, Path("/tmp")).dns) == ()  # no fingerprint moves


@pytest.mark.parametrize(("extra", "where", "message"), [
    ('rejectResponseCode = "servfail"\n', "9: dns.rejectResponseCode", "'refused' or 'nameError'"),
    ("minTTL = -1\n", "9: dns.minTTL", "greater than or equal to 0"),
    ("minTtl2 = 3\n", "9: dns.minTtl2", "unknown field"),
])
def test_bad_settings_name_file_line_and_key(extra: str, where: str, message: str) -> None:
    with pytest.raises(ConfigError) as err:
        parse_config(BASE + "\n[dns]\n" + extra, Path("/tmp"))
    text = str(err.value)
    assert text.startswith(f"meshctl.toml:{where}: ") and message in text and "\n" not in text.strip(), text


def test_a_settings_change_is_planned_with_its_meshctl_toml_words_and_patched_back() -> None:
    before = NodeState("n1", fqdn=FrozenMap({"api.stripe.com": 260}))
    after = NodeState("n1", fqdn=FrozenMap({"api.stripe.com": 260, DNS_MIN_TTL: 30, DNS_NXDOMAIN: 1}))
    (change,) = diff_node(before, after, Catalog())
    assert change.after == {"selectors": {"api.stripe.com": 260}, "minTTL": 30,
                            "rejectResponseCode": "nameError"}
    assert change.reason == 'meshctl.toml [dns] minTTL 0 -> 30, rejectResponseCode refused -> nameError'
    assert apply_changes(before, [change]) == after
    assert codec.fqdn_from(codec.fqdn_value(after.fqdn)) == after.fqdn
