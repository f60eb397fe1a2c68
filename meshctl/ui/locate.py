"""file:line of what decided a flow: its rule (by cookie), or the policies isolating a default deny.

Flows carry rule names; the page shows where they are written, from the repo compiled once when
`meshctl ui` starts (cookies are stable per rule, so the names agree with what was applied).
"""

from __future__ import annotations

from typing import Any

from meshctl.flows.flow import REASON_EXPLICIT_DENY, Flow
from meshctl.ui.graph import Locate


def locator(compiled: Any) -> Locate:
    """A Locate over a meshctl.compile Compiled."""
    by_cookie = {cookie: f" ({o.file}:{o.line})" for cookie, o in compiled.origins.items() if o.file}
    by_policy = {d.title: f"{d.source.file}:{d.source.line}" for d in compiled.spec.policies if d.source}

    def locate(f: Flow) -> str:
        if f.cookie and (f.reason == REASON_EXPLICIT_DENY or f.policy):
            return by_cookie.get(f.cookie, "")
        where = [by_policy[p] for p in f.isolated_by if p in by_policy]
        return f" ({', '.join(where)})" if where else ""

    return locate
