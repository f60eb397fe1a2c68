"""The node's policy routing for the L7 redirect (bpf/lib/proxy.h), as Cilium's proxy rules.

The packets the datapath assigned to the proxy's sockets carry addresses that are not the node's
(the original destination, or the original client for the proxy's upstream): MARK_TO_PROXY
sends them through table PROXY_TABLE, whose one route delivers everything locally.
"""

from __future__ import annotations

import socket

from meshctl.dataplane.netns import netlink
from meshctl.dataplane.structs import MARK_PROXY_MASK, MARK_TO_PROXY

PROXY_TABLE = 2004  # Cilium's table for the same purpose
PROXY_RULE_PREF = 9


def ensure_proxy_routing(netns: str | None) -> None:
    """`fwmark MARK_TO_PROXY/MARK_PROXY_MASK lookup PROXY_TABLE` and `local 0.0.0.0/0 dev lo` in
    that table, in `netns`; idempotent."""
    with netlink(netns, f"proxy routing (table {PROXY_TABLE}) in") as ipr:
        if not any(r.get_attr("FRA_PRIORITY") == PROXY_RULE_PREF and r.get_attr("FRA_TABLE") == PROXY_TABLE
                   for r in ipr.get_rules(family=socket.AF_INET)):
            ipr.rule("add", family=socket.AF_INET, table=PROXY_TABLE, priority=PROXY_RULE_PREF,
                     fwmark=MARK_TO_PROXY, fwmask=MARK_PROXY_MASK)
        lo = ipr.link_lookup(ifname="lo")[0]
        ipr.route("replace", dst="0.0.0.0/0", table=PROXY_TABLE, type="local", oif=lo, scope="host")
