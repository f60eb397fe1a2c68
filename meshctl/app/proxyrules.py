"""The HTTP rules as the node's Envoy will take them: validated by Envoy itself at plan time.

Cilium's method, path and host are regexes Envoy runs as RE2, which refuses some that Python's
`re` takes (back-references, lookarounds). `envoy --mode validate` of the candidate routes finds
them before any node sees them; the message names the rule's file and line.
"""

from __future__ import annotations

from dataclasses import replace
from typing import TYPE_CHECKING

from meshctl.errors import CompileError

if TYPE_CHECKING:
    from meshctl.compile import Compiled


def check_http_rules(compiled: Compiled) -> None:
    """Raise CompileError for the first HTTP rule Envoy refuses (nothing to do without any)."""
    from meshctl.dataplane.envoy import validate
    from meshctl.dataplane.envoy_config import route_config

    # every peer as "any": the peers' addresses do not matter to Envoy's verdict on the rules
    policies = {replace(p, identity=0) for state in compiled.nodes.values() for p in state.http}
    whole = validate(route_config(policies, {})) if policies else None
    if whole is None:
        return
    seen = set()
    for p in sorted(policies):
        for rule in p.rules:
            if (p.cookie, rule) in seen:
                continue
            seen.add((p.cookie, rule))
            err = validate(route_config({replace(p, rules=(rule,))}, {}))
            if err is None:
                continue
            origin = compiled.catalog.cookies.get(p.cookie)
            where = f"{origin.file}:{origin.line}: {origin}" if origin and origin.file else str(origin)
            shown = ", ".join(f"{k}: {v!r}" for k, v in (("method", rule.method), ("path", rule.path),
                                                           ("host", rule.host)) if v)
            raise CompileError(f"{where}: the HTTP rule {{{shown}}} is refused by Envoy (RE2 regexes): {err}")
    raise CompileError(f"Envoy refuses the HTTP rules: {whole}")
