"""`meshctl fqdn cache list|clean`: the IPs each node's DNS proxy learned for toFQDNs (as
`cilium fqdn cache`). Runtime state, read through the workspace's backend (the lab, or each
node's agent): never planned, never drift.
"""

from __future__ import annotations

import json
import time
from pathlib import Path
from typing import Annotated

import typer

from meshctl.cli.main import app
from meshctl.cli.options import TextOrJson
from meshctl.cli.plan import RepoOpt
from meshctl.errors import MeshctlError
from meshctl.fqdnmatch import FqdnSelector, pattern_error

fqdn_app = typer.Typer(help="FQDN egress: what the nodes' DNS proxies learned.", no_args_is_help=True)
cache_app = typer.Typer(help="The IPs learned from DNS answers (toFQDNs selects them).", no_args_is_help=True)
fqdn_app.add_typer(cache_app, name="cache")
app.add_typer(fqdn_app, name="fqdn")

NodeOpt = Annotated[list[str] | None, typer.Option("--node", help="Only this node (repeatable).")]
PatternOpt = Annotated[str, typer.Option(
    "--matchpattern", "-p", help="Only names this pattern matches ('*' within one label: *.stripe.com).")]


def _selector(pattern: str) -> FqdnSelector | None:
    problem = pattern_error(pattern) if pattern else None
    if problem:
        raise MeshctlError(f"--matchpattern: {pattern!r}: {problem}")
    return FqdnSelector.of(match_pattern=pattern) if pattern else None


@cache_app.command("list")
def cache_list(
    repo: RepoOpt = Path("."), node: NodeOpt = None, pattern: PatternOpt = "",
    output: Annotated[TextOrJson, typer.Option("-o", "--output", help="text or json.")] = TextOrJson.text,
) -> None:
    """Each node's learned IPs: the names they were answered for, their identity, their expiry."""
    from meshctl.app.workspace import open_workspace, select_nodes

    selector = _selector(pattern)
    ws = open_workspace(repo)
    caches = ws.backend.fqdn_cache(select_nodes(ws, node or ()))
    rows = [(n, c) for n, cached in caches.items() for c in cached
            if selector is None or any(selector.matches(name) for name in c.names)]
    if output is TextOrJson.json:
        print(json.dumps([{"node": n, **c.to_json()} for n, c in rows], indent=2))
        return
    now = time.time()
    table = [("NODE", "IP", "IDENTITY", "NAMES", "EXPIRES")]
    for n, c in rows:
        left = c.expires - now  # past it, the IP stays while a tracked connection uses it
        table.append((n, c.ip, str(c.identity), ",".join(c.names),
                      f"in {left:.0f}s" if left > 0 else f"{-left:.0f}s ago"))
    widths = [max(len(r[i]) for r in table) for i in range(5)]
    for r in table:
        print("  ".join(c.ljust(w) for c, w in zip(r, widths, strict=True)).rstrip())
    print(f"{len(rows)} learned IP(s) on {len(caches)} node(s)")


@cache_app.command("clean")
def cache_clean(
    repo: RepoOpt = Path("."), node: NodeOpt = None, pattern: PatternOpt = "",
    force: Annotated[bool, typer.Option("--force", "-f", help="Do not ask.")] = False,
) -> None:
    """Forget learned IPs (all, or those of names --matchpattern matches): they leave the ipcache
    at once; tracked connections keep going, new ones need a new DNS answer."""
    from meshctl.app.workspace import open_workspace, select_nodes

    _selector(pattern)
    ws = open_workspace(repo)
    nodes = select_nodes(ws, node or ())
    what = f"the IPs learned for {pattern}" if pattern else "every learned IP"
    if not force and not typer.confirm(f"Remove {what} on {', '.join(nodes)}?"):
        raise MeshctlError("nothing removed")
    for n, removed in ws.backend.fqdn_clean(nodes, pattern).items():
        print(f"{n}: {len(removed)} IP(s) removed{': ' + ', '.join(removed) if removed else ''}")
