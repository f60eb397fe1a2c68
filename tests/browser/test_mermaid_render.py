"""The pull-request comment's Mermaid graph, rendered by the mermaid package in headless Chromium.

The war story's `meshctl impact -o markdown` (a real git repo: main = examples/production, the
branch adds database-security) must hold a graph that Mermaid parses and draws with a red
cache -> postgres tcp/5432 edge; a graph past MAX_EDGES and one with hostile names must parse too.
A screenshot of the comment (text and picture) goes to the test's folder and, with
MESHCTL_UPDATE_DOCS=1, to docs/images/pr-comment-graph.png for the README.
"""

from __future__ import annotations

import html
import json
import os
import re
import shutil
import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest

from meshctl.report.mermaid import ALLOW, DROP, MAX_EDGES, ChangeEdge, markdown_block
from tests.browser.chromium import WEB_ASSETS, available, console_errors, headless_chromium

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "privileged"))
from apply_helpers import example_copy, git_init

pytestmark = pytest.mark.skipif(not available(), reason="needs Debian's chromium and chromium-driver")

REPO = Path(__file__).resolve().parents[2]
MESHCTL = Path(sys.executable).with_name("meshctl")
MERMAID = WEB_ASSETS / "mermaid" / "dist" / "mermaid.min.js"
DOC_IMAGE = REPO / "docs" / "images" / "pr-comment-graph.png"
RED = "#d73a49"


def war_story_markdown(root: Path) -> str:
    repo_dir = example_copy("production", root / "desired", "production")
    repo = git_init(repo_dir, "production")
    repo.git.checkout("-b", "database-security")
    shutil.copy(REPO / "examples" / "production-changes" / "database-security.yaml", repo_dir / "policies")
    repo.git.add(A=True)
    repo.index.commit("tighten database access")
    res = subprocess.run([str(MESHCTL), "impact", "-C", str(repo_dir), "--base", "main", "--head",
                          "database-security", "-o", "markdown"], capture_output=True, text=True, timeout=120)
    assert res.returncode in (0, 2), res.stderr
    return res.stdout


def mermaid_sources(markdown: str) -> list[str]:
    return re.findall(r"```mermaid\n(.*?)```", markdown, re.S)


def page(tmp_path: Path, markdown: str, sources: list[str]) -> Path:
    """A PR-comment-like page: the comment's text as GitHub shows it, the graphs drawn in place."""
    parts = re.split(r"```mermaid\n.*?```", markdown, flags=re.S)
    body = []
    for i in range(max(len(parts), len(sources))):
        if i < len(parts) and parts[i].strip():
            body.append(f"<pre class='md'>{html.escape(parts[i].strip())}</pre>")
        if i < len(sources):
            body.append(f"<div class='graph' id='g{i}'></div>")
    doc = f"""<!doctype html><html><head><meta charset="utf-8">
<style>body{{font:14px -apple-system,Segoe UI,Helvetica,Arial,sans-serif;margin:0;background:#f6f8fa}}
.comment{{max-width:900px;margin:16px auto;background:#fff;border:1px solid #d0d7de;
border-radius:6px;padding:16px}}
pre.md{{white-space:pre-wrap;font:12px ui-monospace,monospace;margin:0 0 8px}} .graph{{margin:8px 0}}</style>
<script src="{MERMAID.as_uri()}"></script></head>
<body><div class="comment">{''.join(body)}</div>
<script>window.SOURCES = {json.dumps(sources)};</script></body></html>"""
    path = tmp_path / "comment.html"
    path.write_text(doc)
    return path


RENDER = """
const done = arguments[arguments.length - 1];
(async () => {
  mermaid.initialize({startOnLoad: false, securityLevel: 'strict'});
  const out = [];
  for (let i = 0; i < window.SOURCES.length; i++) {
    try {
      await mermaid.parse(window.SOURCES[i]);
      const {svg} = await mermaid.render('svg' + i, window.SOURCES[i]);
      document.getElementById('g' + i).innerHTML = svg;
      out.push({ok: true});
    } catch (e) { out.push({ok: false, error: String(e && e.message || e)}); }
  }
  done(out);
})();
"""


def render(driver: Any, path: Path) -> list[dict[str, Any]]:
    driver.set_script_timeout(30)
    driver.get(path.as_uri())
    return driver.execute_async_script(RENDER)


def test_war_story_comment_draws_a_red_cache_to_postgres_edge(tmp_path: Path) -> None:
    markdown = war_story_markdown(tmp_path)
    [source] = mermaid_sources(markdown)
    assert "Connections that change (red: will be dropped)" in markdown
    ids = dict(re.findall(r'^\s+(w\d+)\["([^"]+)"\]', source, re.M))
    by_name = {v: k for k, v in ids.items()}
    edges = re.findall(r"^\s+(w\d+) -->\|\"([^\"]+)\"\| (w\d+)$", source, re.M)
    index = edges.index((by_name["cache"], "tcp/5432", by_name["postgres"]))
    assert f"linkStyle {index} stroke:{RED}" in source
    with headless_chromium(1000, 900) as driver:
        results = render(driver, page(tmp_path, markdown, [source]))
        assert results == [{"ok": True}], results
        assert not [e for e in console_errors(driver) if "favicon" not in e]
        # the drawn edge of cache -> postgres carries the red stroke
        strokes = driver.execute_script(
            "return [...document.querySelectorAll('#g0 svg path')].map(p => p.getAttribute('style') || '')")
        assert any(RED in s for s in strokes), strokes
        labels = driver.execute_script("return document.querySelector('#g0 svg').textContent")
        assert "cache" in labels and "postgres" in labels and "tcp/5432" in labels
        shot = tmp_path / "pr-comment-graph.png"
        driver.find_element("css selector", ".comment").screenshot(str(shot))
        assert shot.stat().st_size > 5_000
        if os.environ.get("MESHCTL_UPDATE_DOCS") == "1":
            DOC_IMAGE.parent.mkdir(parents=True, exist_ok=True)
            shutil.copy(shot, DOC_IMAGE)


def test_big_and_hostile_graphs_parse(tmp_path: Path) -> None:
    many = [ChangeEdge(f"ns{i % 7}/client-{i}", f"ns{i % 5}/server-{i}", "tcp", 1000 + i,
                       DROP if i % 3 else ALLOW) for i in range(MAX_EDGES + 25)]
    hostile = [ChangeEdge('a"b/c<d>#e;f', "x/y-7f8d9c6b5d-x2k9p", "udp", 53, ALLOW),
               ChangeEdge("world", 'q/%%{init}%% end', "tcp", 80, DROP),
               ChangeEdge("reserved:host", "ns/subgraph", "sctp", 9, DROP)]
    sources = [mermaid_sources(markdown_block(edges))[0] for edges in (many, hostile)]
    assert "… and 25 more connections" in sources[0]
    with headless_chromium() as driver:
        results = render(driver, page(tmp_path, "", sources))
    assert results == [{"ok": True}, {"ok": True}], results
