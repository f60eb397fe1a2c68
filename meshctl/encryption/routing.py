"""Routes into the tunnel: a dedicated table plus rules selecting which traffic may use it.

The lab's own routes to peer pod CIDRs (main table, via the peer's underlay IP) are never
touched: encryption adds table TABLE with `PEER_CIDR dev mwg-...` routes and a rule
`from <own pod CIDR> lookup TABLE` (pod traffic only) or, with nodeEncryption,
`not fwmark FWMARK lookup TABLE` (everything but wireguard-go's own UDP). Removing a route sends
that peer's traffic the plain way again, one peer at a time.
"""

from __future__ import annotations

import json
import subprocess
from ipaddress import IPv4Address, IPv4Network
from typing import Any

from meshctl.encryption.names import RULE_PREF, TABLE
from meshctl.errors import DataplaneError


def _ip(netns: str | None, *args: str, check: bool = True) -> str:
    argv = ["ip"] + (["-n", netns] if netns else []) + list(args)
    proc = subprocess.run(argv, capture_output=True, text=True)
    if check and proc.returncode != 0:
        raise DataplaneError(" ".join(argv[:6]), netns or "root netns", 0, proc.stderr.strip())
    return proc.stdout


def _json(netns: str | None, *args: str) -> list[dict[str, Any]]:
    """`ip -j ...` records; [] when the table or netns has none (ip then prints a bare "[")."""
    argv = ["ip"] + (["-n", netns] if netns else []) + ["-j", *args]
    proc = subprocess.run(argv, capture_output=True, text=True)
    if proc.returncode != 0:
        return []
    try:
        return list(json.loads(proc.stdout or "[]"))
    except json.JSONDecodeError:
        return []


def tunnel_routes(netns: str | None, ifname: str) -> set[IPv4Network]:
    """Destinations the table sends through `ifname`."""
    out = _json(netns, "route", "show", "table", str(TABLE))
    return {
        IPv4Network(r["dst"]) for r in out if r.get("dev") == ifname and r.get("dst") not in (None, "default")
    }


def add_route(netns: str | None, ifname: str, dst: IPv4Network, src: IPv4Address | None) -> None:
    extra = ["src", str(src)] if src is not None else []
    _ip(netns, "route", "replace", str(dst), "dev", ifname, "table", str(TABLE), *extra)


def del_route(netns: str | None, dst: IPv4Network) -> None:
    _ip(netns, "route", "del", str(dst), "table", str(TABLE), check=False)


def rules(netns: str | None) -> tuple[str, ...]:
    """Selectors of our rules (pref RULE_PREF into TABLE): "from 10.1.0.0/24", "not fwmark 0xe57"."""
    out = _json(netns, "rule", "show", "pref", str(RULE_PREF))
    found = []
    for r in out:
        if str(r.get("table")) != str(TABLE):
            continue
        if "fwmark" in r:
            found.append(f"{'not ' if 'not' in r else ''}fwmark {r['fwmark']}")  # "not": null
        elif r.get("src") not in (None, "all"):
            found.append(f"from {r['src']}/{r.get('srclen', 32)}")
    return tuple(sorted(found))


def add_rule(netns: str | None, selector: str) -> None:
    _ip(netns, "rule", "add", *selector.split(), "lookup", str(TABLE), "pref", str(RULE_PREF))


def del_rule(netns: str | None, selector: str) -> None:
    _ip(netns, "rule", "del", *selector.split(), "lookup", str(TABLE), "pref", str(RULE_PREF), check=False)
