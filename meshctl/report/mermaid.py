"""A Mermaid flowchart of the connections a change stops or starts, for pull-request comments.

GitHub renders ```mermaid blocks in comments, so a reviewer sees the broken edge before reading
the table: red for connections that will be dropped, green for newly allowed ones, amber dotted
for what staged policies would drop once enforced. Pods are drawn as workloads (a Deployment's
or StatefulSet's pods share one box) inside their namespace; at most MAX_EDGES edges are drawn,
the rest is counted in one note.
"""

from __future__ import annotations

import re
from collections.abc import Iterable
from dataclasses import dataclass

MAX_EDGES = 40
DROP, ALLOW, WOULD_DROP = "drop", "allow", "would-drop"
STYLES = {
    DROP: "stroke:#d73a49,stroke-width:3px,color:#d73a49",
    ALLOW: "stroke:#28a745,stroke-width:3px,color:#28a745",
    WOULD_DROP: "stroke:#e3a008,stroke-width:2px,stroke-dasharray:4 3,color:#b08800",
}
LEGEND = {
    DROP: "red: will be dropped",
    ALLOW: "green: newly allowed",
    WOULD_DROP: "amber, dotted: dropped once the staged policies are enforced",
}
# a pod name's generated tail: Deployment (-<replicaset hash>-<5 chars>), StatefulSet (-<ordinal>)
_POD_TAIL = re.compile(r"(-[a-z0-9]{8,10}-[a-z0-9]{5}|-[a-z0-9]{5}|-\d+)$")


@dataclass(frozen=True)
class ChangeEdge:
    """One connection whose verdict changes: "ns/pod" (or world, an identity) ends."""

    src: str
    dst: str
    protocol: str
    port: int
    kind: str  # DROP | ALLOW | WOULD_DROP


def workload(pod: str) -> tuple[str, str]:
    """("namespace", "workload") of "ns/pod"; ("", name) for world and other non-pod ends."""
    namespace, slash, name = pod.partition("/")
    if not slash:
        return "", pod
    return namespace, _POD_TAIL.sub("", name) or name


def _label(text: str) -> str:
    """A quoted Mermaid label: quotes and markup characters as entity codes, so any name parses."""
    for char, code in (("#", "#35;"), ('"', "#quot;"), ("<", "#lt;"), (">", "#gt;")):
        text = text.replace(char, code)
    return f'"{text}"'


def flowchart(edges: Iterable[ChangeEdge]) -> str:
    """The Mermaid source (without the fence): drops first, then allows, then would-drops, each
    sorted; pod pairs of the same workloads and port are one edge with a count."""
    order = {DROP: 0, ALLOW: 1, WOULD_DROP: 2}
    grouped: dict[tuple[int, tuple[str, str], tuple[str, str], str, int, str], int] = {}
    for e in edges:
        key = (order[e.kind], workload(e.src), workload(e.dst), e.protocol, e.port, e.kind)
        grouped[key] = grouped.get(key, 0) + 1
    keys = sorted(grouped)
    shown, hidden = keys[:MAX_EDGES], len(keys) - MAX_EDGES
    ids: dict[tuple[str, str], str] = {}
    for _, src, dst, *_rest in shown:
        for end in (src, dst):
            ids.setdefault(end, f"w{len(ids)}")
    lines = ["flowchart LR"]
    namespaces = sorted({ns for ns, _ in ids if ns})
    for i, ns in enumerate(namespaces):
        lines.append(f"  subgraph ns{i}[{_label(ns)}]")
        lines += [f"    {ids[end]}[{_label(end[1])}]" for end in sorted(ids) if end[0] == ns]
        lines.append("  end")
    lines += [f"  {ids[end]}([{_label(end[1])}])" for end in sorted(ids) if not end[0]]
    styles = []
    for n, (_, src, dst, proto, port, kind) in enumerate(shown):
        pairs = grouped[(order[kind], src, dst, proto, port, kind)]
        text = f"{proto}/{port}" + (f" ×{pairs}" if pairs > 1 else "")
        arrow = "-.->" if kind == WOULD_DROP else "-->"
        lines.append(f"  {ids[src]} {arrow}|{_label(text)}| {ids[dst]}")
        styles.append(f"  linkStyle {n} {STYLES[kind]}")
    if hidden > 0:
        lines.append(f"  more[{_label(f'… and {hidden} more connections (see the table)')}]")
    return "\n".join(lines + styles) + "\n"


def markdown_block(edges: Iterable[ChangeEdge]) -> str:
    """The fenced block with a one-line legend, or "" when nothing changes."""
    edges = list(edges)
    if not edges:
        return ""
    kinds = [k for k in (DROP, ALLOW, WOULD_DROP) if any(e.kind == k for e in edges)]
    legend = " · ".join(LEGEND[k] for k in kinds)
    return f"\n<sub>Connections that change ({legend})</sub>\n\n```mermaid\n{flowchart(edges)}```\n"


def verdict_edge(
    src: str, dst: str, protocol: str, port: int, after: str, kind_if_dropped: str = DROP
) -> ChangeEdge:
    """An edge of an impact row whose verdict becomes `after` (FORWARDED or DROPPED)."""
    return ChangeEdge(src, dst, protocol, port, kind_if_dropped if after == "DROPPED" else ALLOW)
