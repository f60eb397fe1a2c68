"""The plan view: the connections a plan (or a base..head change) stops or starts, as map edges.

Rows come from a saved plan's connectivity impact or from `meshctl impact`'s comparison of two
revisions; pods are folded into the same workload nodes as the flows, so the page can lay the
changes over the edges traffic was seen on.
"""

from __future__ import annotations

from collections.abc import Iterable
from pathlib import Path
from typing import Any

from meshctl.ui.graph import edge_id, node_of


def _end(name: str) -> tuple[str, str, str, str]:
    if "/" in name:
        return node_of(name, (), "")
    return name, name, "", "world" if name == "world" else "entity"


def plan_edges(rows: Iterable[tuple[str, str, str, int, str]], title: str) -> dict[str, Any]:
    """rows of (src, dst, protocol, port, new verdict) -> {"title", "nodes", "changes"}."""
    nodes: dict[str, dict[str, str]] = {}
    changes: dict[str, dict[str, Any]] = {}
    for src, dst, protocol, port, after in rows:
        ends = []
        for name in (src, dst):
            nid, label, namespace, kind = _end(name)
            nodes.setdefault(nid, {"id": nid, "label": label, "namespace": namespace, "kind": kind})
            ends.append(nid)
        eid = edge_id(ends[0], ends[1], protocol.lower(), port)
        change = "drop" if after == "DROPPED" else "allow"
        entry = changes.setdefault(eid, {"id": eid, "source": ends[0], "target": ends[1],
                                         "label": f"{protocol.lower()}/{port}", "change": change, "pairs": 0})
        entry["pairs"] += 1
    return {"title": title, "nodes": list(nodes.values()), "changes": list(changes.values())}


def from_plan_file(path: Path) -> dict[str, Any]:
    from meshctl.plan import read_plan

    plan = read_plan(path)
    rows = [(r.src, r.dst, r.protocol, r.port, r.after) for r in plan.impact]
    return plan_edges(rows, f"plan {plan.plan_id[7:19]}")


def from_revisions(repo: Path, base: str, head: str | None) -> dict[str, Any]:
    from meshctl.impact import compare_revisions

    report, _ = compare_revisions(repo, base, head, flows=None, window="0", replay_note="off")
    rows = [(p.src, p.dst, p.protocol, p.port, p.head) for p in report.pairs]
    return plan_edges(rows, f"{report.base.short} → {report.head.short}")
