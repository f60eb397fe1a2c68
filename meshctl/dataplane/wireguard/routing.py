"""Routes into the tunnel: a dedicated table plus rules selecting which traffic may use it.

The lab's own routes to peer pod CIDRs (main table, via the peer's underlay IP) are never
touched: encryption adds table TABLE with `PEER_CIDR dev mwg-...` routes and a rule
`from <own pod CIDR> lookup TABLE` (pod traffic only) or, with nodeEncryption,
`not fwmark FWMARK lookup TABLE` (everything but wireguard-go's own UDP). Removing a route sends
that peer's traffic the plain way again, one peer at a time.

Everything goes through netlink (pyroute2) in the node's netns: a failed read raises rather
than reading as "no routes", which would make reconcile add what exists or keep what must go.
Selectors are kept in `ip rule`'s words ("from 10.1.0.0/24", "not fwmark 0xe57") because the
intended state records them so; parse_selector and format_rule translate both ways.
"""

from __future__ import annotations

import errno
import socket
from collections.abc import Callable
from dataclasses import dataclass
from ipaddress import IPv4Address, IPv4Network
from typing import Any, TypeVar

from meshctl.dataplane.netns import netlink
from meshctl.dataplane.wireguard.names import RULE_PREF, TABLE
from meshctl.errors import DataplaneError

FIB_RULE_INVERT = 0x2  # struct fib_rule_hdr.flags: "not" in `ip rule`
ALL_BITS = 0xFFFFFFFF

T = TypeVar("T")


@dataclass(frozen=True)
class Selector:
    """What a rule matches: a source prefix, or a firewall mark (inverted or not)."""

    src: IPv4Network | None = None
    fwmark: int | None = None
    invert: bool = False


def parse_selector(text: str) -> Selector:
    """"from 10.1.0.0/24" or "[not] fwmark 0xe57" (the forms compile writes)."""
    words = text.split()
    invert = bool(words) and words[0] == "not"
    if invert:
        words = words[1:]
    if len(words) == 2 and words[0] == "from":
        return Selector(src=IPv4Network(words[1]), invert=invert)
    if len(words) == 2 and words[0] == "fwmark":
        return Selector(fwmark=int(words[1], 0), invert=invert)
    raise ValueError(f"unsupported rule selector {text!r}")


def format_rule(flags: int, src: str | None, src_len: int, fwmark: int | None) -> str | None:
    """A dumped rule in the selector's words; None for a form compile never writes."""
    prefix = "not " if flags & FIB_RULE_INVERT else ""
    if fwmark:
        return f"{prefix}fwmark {fwmark:#x}"
    if src and src_len:
        return f"{prefix}from {IPv4Network(f'{src}/{src_len}')}"
    return None


def _tolerate(code: int, call: Callable[[], T]) -> T | None:
    """`call()`, or None when it fails with errno `code` (already absent on delete)."""
    from pyroute2.netlink.exceptions import NetlinkError

    try:
        return call()
    except NetlinkError as err:
        if err.code != code:
            raise
        return None


def tunnel_routes(netns: str | None, ifname: str) -> set[IPv4Network]:
    """Destinations the table sends through `ifname` (none when `ifname` does not exist)."""
    with netlink(netns, f"read routes of table {TABLE} in") as ipr:
        index = ipr.link_lookup(ifname=ifname)
        if not index:
            return set()
        out = set()
        for r in ipr.route("dump", family=socket.AF_INET, table=TABLE):
            dst = r.get_attr("RTA_DST")
            if r.get_attr("RTA_TABLE") == TABLE and r.get_attr("RTA_OIF") == index[0] and dst:
                out.add(IPv4Network(f"{dst}/{r['dst_len']}"))
        return out


def add_route(netns: str | None, ifname: str, dst: IPv4Network, src: IPv4Address | None) -> None:
    with netlink(netns, f"route {dst} dev {ifname} table {TABLE} in") as ipr:
        index = ipr.link_lookup(ifname=ifname)
        if not index:
            raise DataplaneError(f"route {dst} dev {ifname} in", netns or "root netns", errno.ENODEV)
        extra = {"prefsrc": str(src)} if src is not None else {}
        ipr.route("replace", dst=str(dst), oif=index[0], table=TABLE, **extra)


def del_route(netns: str | None, dst: IPv4Network) -> None:
    """Remove the table's route to `dst`; a route already gone is fine."""
    with netlink(netns, f"delete route {dst} table {TABLE} in") as ipr:
        _tolerate(errno.ESRCH, lambda: ipr.route("del", dst=str(dst), table=TABLE))


def rules(netns: str | None) -> tuple[str, ...]:
    """Selectors of our rules (pref RULE_PREF into TABLE): "from 10.1.0.0/24", "not fwmark 0xe57"."""
    found = []
    with netlink(netns, "read rules in") as ipr:
        for r in ipr.get_rules(family=socket.AF_INET):
            if r.get_attr("FRA_PRIORITY") != RULE_PREF or r.get_attr("FRA_TABLE") != TABLE:
                continue
            text = format_rule(r["flags"], r.get_attr("FRA_SRC"), r["src_len"], r.get_attr("FRA_FWMARK"))
            if text is not None:
                found.append(text)
    return tuple(sorted(found))


def _rule_args(selector: str) -> dict[str, Any]:
    s = parse_selector(selector)
    args: dict[str, Any] = {"family": socket.AF_INET, "table": TABLE, "priority": RULE_PREF,
                            "flags": FIB_RULE_INVERT if s.invert else 0}
    if s.src is not None:
        args.update(src=str(s.src.network_address), src_len=s.src.prefixlen)
    if s.fwmark is not None:
        args.update(fwmark=s.fwmark, fwmask=ALL_BITS)
    return args


def add_rule(netns: str | None, selector: str) -> None:
    with netlink(netns, f"rule {selector} lookup {TABLE} in") as ipr:
        ipr.rule("add", **_rule_args(selector))


def del_rule(netns: str | None, selector: str) -> None:
    """Remove our rule with this selector; a rule already gone is fine."""
    with netlink(netns, f"delete rule {selector} in") as ipr:
        _tolerate(errno.ENOENT, lambda: ipr.rule("del", **_rule_args(selector)))
