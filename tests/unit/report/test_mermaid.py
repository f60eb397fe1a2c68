"""The Mermaid graph of a change: workloads, edge kinds and styles, the edge limit, escaping."""

from __future__ import annotations

import re

from meshctl.report.mermaid import (
    ALLOW,
    DROP,
    MAX_EDGES,
    WOULD_DROP,
    ChangeEdge,
    flowchart,
    markdown_block,
    workload,
)


def test_pods_become_workloads_in_their_namespace() -> None:
    assert workload("shop/api-7d9f8c6b5d-x2k9p") == ("shop", "api")
    assert workload("shop/db-0") == ("shop", "db")
    assert workload("shop/cache") == ("shop", "cache")
    assert workload("world") == ("", "world")


def test_replicas_are_one_edge_with_a_count_and_kinds_have_their_style() -> None:
    src = flowchart([
        ChangeEdge("shop/web-7d9f8c6b5d-aaaaa", "shop/db-0", "tcp", 5432, DROP),
        ChangeEdge("shop/web-7d9f8c6b5d-bbbbb", "shop/db-1", "tcp", 5432, DROP),
        ChangeEdge("world", "shop/web-7d9f8c6b5d-aaaaa", "tcp", 80, ALLOW),
        ChangeEdge("shop/web-7d9f8c6b5d-aaaaa", "shop/db-0", "tcp", 6379, WOULD_DROP),
    ])
    names = dict(re.findall(r"(w\d+)\(?\[\"([^\"]+)\"\]\)?", src))
    assert sorted(names.values()) == ["db", "web", "world"]
    edges = re.findall(r"^  (w\d+) (-->|-\.->)\|\"([^\"]+)\"\| (w\d+)$", src, re.M)
    assert [(names[a], arrow, label, names[b]) for a, arrow, label, b in edges] == [
        ("web", "-->", "tcp/5432 ×2", "db"), ("world", "-->", "tcp/80", "web"),
        ("web", "-.->", "tcp/6379", "db")]
    styles = re.findall(r"linkStyle (\d) stroke:(#\w+)", src)
    assert styles == [("0", "#d73a49"), ("1", "#28a745"), ("2", "#e3a008")]
    assert src.count("subgraph") == 1


def test_at_most_max_edges_then_a_count_drops_first() -> None:
    edges = [ChangeEdge(f"a/c{i}", f"b/s{i}", "tcp", i, ALLOW if i < 10 else DROP)
             for i in range(1, MAX_EDGES + 11)]
    src = flowchart(edges)
    assert len(re.findall(r"^  w\d+ -->", src, re.M)) == MAX_EDGES
    assert "… and 10 more connections (see the table)" in src
    assert src.count("linkStyle") == src.count("stroke:#d73a49") == MAX_EDGES  # drops drawn, allows counted


def test_names_cannot_break_the_syntax() -> None:
    src = flowchart([ChangeEdge('x"y/a<b>#c', "end/subgraph", "udp", 53, DROP)])
    assert '["x#quot;y"]' in src and '["a#lt;b#gt;#35;c"]' in src
    assert all(line.count('"') % 2 == 0 for line in src.splitlines())


def test_markdown_block_has_a_legend_and_nothing_for_no_change() -> None:
    assert markdown_block([]) == ""
    block = markdown_block([ChangeEdge("a/b", "c/d", "tcp", 1, ALLOW)])
    assert "green: newly allowed" in block and "red" not in block.split("```")[0]
    assert block.count("```") == 2 and "```mermaid\nflowchart LR\n" in block
