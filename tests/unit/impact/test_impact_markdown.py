"""The PR comment: golden markdown for the war story, parsed back with markdown-it-py.

Regenerate the golden file with MESHCTL_UPDATE_GOLDEN=1 after an intended change.
"""

from __future__ import annotations

import os
import sys
from pathlib import Path

import pytest
from markdown_it import MarkdownIt

sys.path.insert(0, str(Path(__file__).parent))
from impact_fixtures import CHANGE, PRODUCTION

from meshctl.flows.flow import Flow
from meshctl.impact.compute import compare_states, policy_changes
from meshctl.impact.inventory import resolve_inventory, with_inventory
from meshctl.impact.model import ImpactReport, Revision
from meshctl.impact.render import render_markdown
from meshctl.impact.replay import replay_flows
from meshctl.source import load_desired

GOLDEN = Path(__file__).resolve().parents[2] / "golden" / "data" / "impact_war_story.md"
T0 = 1_767_225_600 * 10**9  # 2026-01-01T00:00:00Z


def _flow(t: int, src: str, dst: str, port: int, verdict: int = 1, node: str = "node-3") -> Flow:
    return Flow(
        time_ns=T0 + t * 10**9,
        node=node,
        verdict=verdict,
        reason=0,
        direction=1,
        protocol=6,
        src_ip="0.0.0.0",
        dst_ip="0.0.0.0",
        src_port=40000 + t,
        dst_port=port,
        src_identity=0,
        dst_identity=0,
        src_pod=src,
        dst_pod=dst,
    )


@pytest.fixture(scope="module")
def report(tmp_path_factory: pytest.TempPathFactory) -> ImpactReport:
    import shutil

    head_dir = tmp_path_factory.mktemp("head") / "production"
    shutil.copytree(PRODUCTION, head_dir, ignore=shutil.ignore_patterns("state", "plans"))
    shutil.copy(CHANGE, head_dir / "policies" / CHANGE.name)
    base = load_desired(PRODUCTION)
    head, where = resolve_inventory(load_desired(head_dir), use_lab=False)
    compared = compare_states(with_inventory(base, head), head)
    flows = [_flow(i, "production/cache", "production/postgres", 5432) for i in range(40)]
    flows += [_flow(i, "production/backend", "production/postgres", 5432, node="node-2") for i in range(25)]
    replay = replay_flows(flows, compared, head, "24h")
    return ImpactReport(
        cluster="production",
        base=Revision("main", "a" * 40),
        head=Revision("database-security", "b" * 40),
        inventory=where,
        pods=len(head.pods),
        pairs=compared.pairs,
        replay=replay,
        policies_changed=policy_changes(base, head),
    )


def test_replay_counts_the_cache_flows_that_would_drop(report: ImpactReport) -> None:
    r = report.replay
    assert r is not None and (r.flows_seen, r.connections) == (65, 2)
    (drop,) = r.would_drop
    assert (drop.src, drop.dst, drop.port, drop.count) == (
        "production/cache",
        "production/postgres",
        5432,
        40,
    )
    assert r.dropped_flow_count == 40
    assert any("database-security" in rule for rule in drop.head_rules)


def test_markdown_matches_golden(report: ImpactReport) -> None:
    text = render_markdown(report, link="https://github.com/o/r/actions/runs/1/artifacts/2")
    if os.environ.get("MESHCTL_UPDATE_GOLDEN"):
        GOLDEN.write_text(text)
    assert text == GOLDEN.read_text()
    assert "40 flows seen in the last 24h would be DROPPED" in text


def test_markdown_structure_renders_cleanly(report: ImpactReport) -> None:
    text = render_markdown(report)
    md = MarkdownIt("commonmark").enable("table")
    tokens = md.parse(text)
    tables = [i for i, t in enumerate(tokens) if t.type == "table_open"]
    assert len(tables) == 2  # the pairs, the replayed flows
    end = next(i for i, t in enumerate(tokens) if t.type == "table_close")
    headers = [tokens[j + 1].content for j in range(tables[0], end) if tokens[j].type == "th_open"]
    assert headers == ["From", "To", "Port", "Base", "Head"]
    cells = [t.content for t in tokens if t.type == "inline"]
    assert "`production/cache`" in cells and "**DROPPED**" in cells
    html = md.render(text)
    assert html.count("<details>") == html.count("</details>") == 2
    assert html.count("<summary>") == 2
    assert "<table>" in html and "|" not in html.split("<table>")[1].split("</table>")[0].replace("\\|", "")


def test_markdown_is_cut_below_the_limit_with_the_link(report: ImpactReport) -> None:
    big = "x" * 3000
    text = render_markdown(report, limit=4000, link="https://example.invalid/full", appendix=[big, big])
    assert len(text) < 4000
    assert "_Cut:" in text and text.rstrip().endswith("[Full report](https://example.invalid/full)")
    assert text.startswith("<!-- meshctl-impact -->")
    full = render_markdown(report, limit=0, appendix=[big, big])
    assert full.count(big) == 2 and "_Cut:" not in full


def test_unchanged_connection_is_not_replayed_as_changed(report: ImpactReport) -> None:
    assert report.replay is not None
    assert all(f.src != "production/backend" for f in report.replay.changed)
    (drop,) = report.replay.would_drop  # replayed on inventory addresses, not the recorded 0.0.0.0
    assert drop.base == "FORWARDED"
