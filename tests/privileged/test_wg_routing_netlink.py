"""The tunnel's routing table and rules through netlink (pyroute2), in a netns of its own.

Each write is read back by `ip -j` (an independent reader) and by our own reader; deleting what
is already gone is fine; a failed read or write raises a DataplaneError instead of reading as
"nothing there" (which would make reconcile add what exists or keep what must go).
"""

from __future__ import annotations

import json
import os
import subprocess
from collections.abc import Iterator
from ipaddress import IPv4Address, IPv4Network

import pytest

from meshctl.dataplane.wireguard import routing
from meshctl.dataplane.wireguard.names import RULE_PREF, TABLE
from meshctl.errors import DataplaneError

pytestmark = pytest.mark.privileged

NS = f"mc-rt-{os.getpid() % 100000}"
DEV, OTHER = "mc-tun0", "mc-tun1"


def ip(*args: str) -> str:
    return subprocess.run(["ip", "-n", NS, *args], check=True, capture_output=True, text=True).stdout


@pytest.fixture()
def netns() -> Iterator[str]:
    subprocess.run(["ip", "netns", "add", NS], check=True)
    try:
        ip("link", "add", DEV, "type", "veth", "peer", "name", OTHER)
        ip("addr", "add", "10.77.0.1/24", "dev", DEV)
        ip("link", "set", DEV, "up")
        ip("link", "set", OTHER, "up")
        yield NS
    finally:
        subprocess.run(["ip", "netns", "del", NS], check=False)


def _ip_rules() -> set[str]:
    out = set()
    for r in json.loads(ip("-j", "rule", "show") or "[]"):
        if r.get("priority") == RULE_PREF and str(r.get("table")) == str(TABLE):
            what = f"fwmark {r['fwmark']}" if "fwmark" in r else f"from {r['src']}/{r['srclen']}"
            out.add(("not " if "not" in r else "") + what)
    return out


def _ip_routes() -> set[tuple[str, str]]:
    return {(r["dst"], r["dev"]) for r in json.loads(ip("-j", "route", "show", "table", str(TABLE)) or "[]")}


def test_rules_round_trip(netns: str) -> None:
    assert routing.rules(netns) == ()
    routing.add_rule(netns, "from 10.1.0.0/24")
    routing.add_rule(netns, "not fwmark 0xe57")
    assert routing.rules(netns) == ("from 10.1.0.0/24", "not fwmark 0xe57")
    assert _ip_rules() == {"from 10.1.0.0/24", "not fwmark 0xe57"}
    ip("rule", "add", "from", "10.9.0.0/24", "lookup", "main", "pref", str(RULE_PREF))  # another table
    routing.del_rule(netns, "not fwmark 0xe57")
    routing.del_rule(netns, "not fwmark 0xe57")  # already gone: fine
    assert routing.rules(netns) == ("from 10.1.0.0/24",) and _ip_rules() == {"from 10.1.0.0/24"}
    with pytest.raises(DataplaneError, match=r"rule from 10\.1\.0\.0/24 lookup 201 in .*File exists"):
        routing.add_rule(netns, "from 10.1.0.0/24")


def test_routes_round_trip(netns: str) -> None:
    routing.add_route(netns, DEV, IPv4Network("10.2.0.0/24"), IPv4Address("10.77.0.1"))
    routing.add_route(netns, DEV, IPv4Network("10.3.0.0/24"), None)
    routing.add_route(netns, DEV, IPv4Network("10.3.0.0/24"), None)  # replace: idempotent
    routing.add_route(netns, OTHER, IPv4Network("10.4.0.0/24"), None)
    assert routing.tunnel_routes(netns, DEV) == {IPv4Network("10.2.0.0/24"), IPv4Network("10.3.0.0/24")}
    assert _ip_routes() == {("10.2.0.0/24", DEV), ("10.3.0.0/24", DEV), ("10.4.0.0/24", OTHER)}
    shown = ip("-j", "route", "show", "table", str(TABLE), "10.2.0.0/24")
    assert json.loads(shown)[0]["prefsrc"] == "10.77.0.1"
    routing.del_route(netns, IPv4Network("10.2.0.0/24"))
    routing.del_route(netns, IPv4Network("10.2.0.0/24"))  # already gone: fine
    assert routing.tunnel_routes(netns, DEV) == {IPv4Network("10.3.0.0/24")}
    assert routing.tunnel_routes(netns, "mc-absent") == set()
    assert ip("route", "show").strip() == "10.77.0.0/24 dev mc-tun0 proto kernel scope link src 10.77.0.1"


def test_failures_raise_instead_of_reading_as_empty(netns: str) -> None:
    with pytest.raises(DataplaneError, match="No such device"):
        routing.add_route(netns, "mc-absent", IPv4Network("10.5.0.0/24"), None)
    with pytest.raises(DataplaneError, match="Invalid argument"):
        routing.add_route(netns, DEV, IPv4Network("10.5.0.0/24"), IPv4Address("192.0.2.1"))  # not local
    with pytest.raises(DataplaneError, match="enter network namespace mc-absent-ns"):
        routing.rules("mc-absent-ns")
    with pytest.raises(DataplaneError, match="enter network namespace mc-absent-ns"):
        routing.tunnel_routes("mc-absent-ns", DEV)


def test_selector_words_round_trip() -> None:
    for text in ("from 10.1.0.0/24", "not fwmark 0xe57", "fwmark 0x1", "not from 10.0.0.0/8"):
        s = routing.parse_selector(text)
        assert routing.format_rule(routing.FIB_RULE_INVERT if s.invert else 0,
                                   str(s.src.network_address) if s.src else None,
                                   s.src.prefixlen if s.src else 0, s.fwmark) == text
    with pytest.raises(ValueError, match="unsupported rule selector"):
        routing.parse_selector("iif eth0")
