"""`meshctl ui` in headless Chromium, as a person would look at it.

In a lab with examples/three-tier applied and traffic made (a dropped frontend -> database
connection among allowed ones): the page loads without console errors, the map holds the four
workloads and the red frontend -> database edge, clicking it shows the rule and `trace this`
the trace, and a connection made while the page is open appears within 2 s. Screenshots go to
the test's folder (and, with MESHCTL_UPDATE_DOCS=1, docs/images/ui-service-map.png).
A synthetic window of 1,000 workloads and 5,000 edges must render in under 2 s.
"""

from __future__ import annotations

import os
import random
import re
import shutil
import signal
import subprocess
import sys
import threading
import time
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import pytest

from meshctl.ui.server import UiApp, UiSettings, make_server
from tests.browser.chromium import available, console_errors, headless_chromium

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "privileged"))
from apply_helpers import MESHCTL, cli_lab, connect, example_copy, meshctl, unique_cluster

pytestmark = pytest.mark.skipif(not available(), reason="needs Debian's chromium and chromium-driver")

REPO = Path(__file__).resolve().parents[2]
DOC_IMAGE = REPO / "docs" / "images" / "ui-service-map.png"
DROPPED_EDGE = "demo/frontend>demo/database>tcp/5432"
LIVE_EDGE = "demo/api>demo/database>tcp/5432"
WAIT_READY = "const done = arguments[0]; window.meshctl.ready.then(() => done(true));"


@pytest.fixture(scope="module")
def lab_ui(tmp_path_factory: pytest.TempPathFactory) -> Iterator[tuple[str, str, Path]]:
    """(cluster, url, repo): three-tier applied in a lab, some traffic, `meshctl ui` serving it."""
    if os.geteuid() != 0:
        pytest.skip("the lab needs root")
    cluster = unique_cluster("t-ui")
    repo = example_copy("three-tier", tmp_path_factory.mktemp("ui") / "desired", cluster)
    with cli_lab(repo):
        res = meshctl(repo, "apply", "--auto-approve", timeout=120)
        assert res.returncode == 0, res.stdout + res.stderr
        assert not connect(cluster, "demo/frontend", "demo/database", 5432)  # default deny
        assert connect(cluster, "demo/frontend", "demo/api", 3000)
        deadline = time.monotonic() + 15  # the agents store the flows within a few hundred ms
        while time.monotonic() < deadline and not _stored(repo):
            time.sleep(0.2)
        with ui_server(repo, "--since", "1h") as url:
            yield cluster, url, repo


@contextmanager
def ui_server(repo: Path, *args: str) -> Iterator[str]:
    """`meshctl ui -C repo --port 0 ARGS` running for the block; its URL."""
    proc = subprocess.Popen([str(MESHCTL), "ui", "-C", str(repo), "--port", "0", *args],
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    try:
        line = proc.stdout.readline() if proc.stdout else ""
        assert "http://127.0.0.1:" in line, line + (proc.stderr.read() if proc.stderr else "")
        yield line.split(" on ", 1)[1].split(" ", 1)[0]
    finally:
        proc.send_signal(signal.SIGINT)
        try:
            proc.wait(timeout=10)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait()


def _stored(repo: Path) -> bool:
    res = meshctl(repo, "observe", "--to-pod", "demo/database", "--verdict", "DROPPED", "--last", "1")
    return "demo/frontend" in res.stdout


def _edge(driver: Any, eid: str) -> dict[str, Any] | None:
    return driver.execute_script(
        "const e = window.meshctl.cy.getElementById(arguments[0]);"
        "return e.length ? {verdict: e.data('verdict'), counts: e.data('counts'),"
        " color: e.data('color')} : null;",
        eid)


def test_the_map_shows_workloads_the_dropped_edge_its_rule_and_live_flows(
        lab_ui: tuple[str, str, Path], tmp_path: Path) -> None:
    cluster, url, _ = lab_ui
    with headless_chromium(1200, 700) as driver:
        driver.set_script_timeout(20)
        driver.get(url)
        driver.execute_async_script(WAIT_READY)
        assert driver.find_element("css selector", "select[name=since]").get_attribute("value") == "1h"
        workloads = driver.execute_script(
            "return window.meshctl.cy.nodes().not('.namespace').map(n => n.id()).sort()")
        assert workloads == ["demo/api", "demo/database", "demo/frontend", "kube-system/kube-dns"]
        dropped = _edge(driver, DROPPED_EDGE)
        assert dropped is not None and dropped["verdict"] == "dropped" and dropped["color"] == "#d73a49"
        assert dropped["counts"]["dropped"] >= 1

        driver.execute_script("window.meshctl.cy.getElementById(arguments[0]).emit('tap')", DROPPED_EDGE)
        deadline = time.monotonic() + 5
        while "default deny" not in driver.find_element("id", "panel").text:
            assert time.monotonic() < deadline, driver.find_element("id", "panel").text
            time.sleep(0.1)
        panel = driver.find_element("id", "panel").text
        assert "dropped: default deny: demo/frontend egress isolated by CiliumNetworkPolicy" in panel
        located = r"isolated by CiliumNetworkPolicy demo/\S+.* \(policies/[\w-]+\.yaml:\d+, "  # file:line
        assert re.search(located, panel), panel
        driver.find_element("id", "trace").click()
        deadline = time.monotonic() + 10
        while "DROPPED" not in driver.find_element("id", "trace-out").text:
            assert time.monotonic() < deadline, "trace this gave nothing"
            time.sleep(0.1)
        assert driver.find_element("id", "trace-out").text.startswith("frontend -> database:5432/TCP DROPPED")
        driver.save_screenshot(str(tmp_path / "service-map.png"))
        if os.environ.get("MESHCTL_UPDATE_DOCS") == "1":
            DOC_IMAGE.parent.mkdir(parents=True, exist_ok=True)
            shutil.copy(tmp_path / "service-map.png", DOC_IMAGE)

        before = _edge(driver, LIVE_EDGE)
        seen = before["counts"]["forwarded"] if before else 0
        started = time.monotonic()
        assert connect(cluster, "demo/api", "demo/database", 5432)
        while True:
            now = _edge(driver, LIVE_EDGE)
            if now is not None and now["counts"]["forwarded"] > seen:
                break
            assert time.monotonic() - started < 2.0, f"the new flow did not appear within 2 s ({now})"
            time.sleep(0.05)
        driver.save_screenshot(str(tmp_path / "service-map-live.png"))
        assert not console_errors(driver)


def test_the_plan_view_draws_what_a_change_drops_over_the_flows_seen(
        lab_ui: tuple[str, str, Path], tmp_path: Path) -> None:
    """Removing api -> database from the repo: `meshctl ui --plan` draws that edge red, with the
    flows seen on it, and the others grey."""
    _, _, repo = lab_ui
    policy = repo / "policies" / "api-to-database.yaml"
    saved = policy.read_text()
    policy.unlink()
    try:
        res = meshctl(repo, "plan", "--out", str(tmp_path / "plan.json"), timeout=120)
        assert res.returncode == 0, res.stderr
    finally:
        policy.write_text(saved)
    with ui_server(repo, "--plan", str(tmp_path / "plan.json"), "--since", "1h") as url, \
            headless_chromium(1200, 700) as driver:
        driver.set_script_timeout(20)
        driver.get(url)
        driver.execute_async_script(WAIT_READY)
        assert driver.find_element("id", "mode").text.startswith("plan view: plan ")
        change = driver.execute_script(
            "const e = window.meshctl.cy.getElementById(arguments[0]);"
            "return [e.hasClass('change'), e.data('color'), e.data('text')];", LIVE_EDGE)
        assert change[:2] == [True, "#d73a49"], change
        assert re.fullmatch(r"tcp/5432 · will drop · [1-9]\d* flows seen", change[2]), change
        grey = driver.execute_script(
            "return window.meshctl.cy.edges('.same').map(e => e.id())")
        assert "demo/frontend>demo/api>tcp/3000" in grey
        driver.save_screenshot(str(tmp_path / "plan-view.png"))
        assert not console_errors(driver)


def synthetic(workloads: int, edges: int, namespaces: int = 50) -> dict[str, Any]:
    rng = random.Random(7)
    nodes = [{"id": f"ns{i % namespaces}/w{i}", "label": f"w{i}", "namespace": f"ns{i % namespaces}",
              "kind": "workload"} for i in range(workloads)]
    out, seen = [], set()
    while len(out) < edges:
        a, b, port = rng.randrange(workloads), rng.randrange(workloads), rng.choice((80, 443, 5432, 6379, 53))
        key = (a, b, port)
        if a == b or key in seen:
            continue
        seen.add(key)
        verdict = rng.choice(("forwarded", "forwarded", "dropped", "both", "audit"))
        out.append({"id": f"{nodes[a]['id']}>{nodes[b]['id']}>tcp/{port}", "source": nodes[a]["id"],
                    "target": nodes[b]["id"], "label": f"tcp/{port}", "verdict": verdict,
                    "counts": {"forwarded": rng.randrange(100), "dropped": rng.randrange(10), "audit": 0}})
    return {"nodes": nodes, "edges": out, "flows": 0}


def test_a_thousand_workloads_and_five_thousand_edges_render_in_under_two_seconds(tmp_path: Path) -> None:
    server = make_server(UiApp(UiSettings(tmp_path, "synthetic")), 0)
    thread = threading.Thread(target=server.serve_forever, kwargs={"poll_interval": 0.1}, daemon=True)
    thread.start()
    try:
        with headless_chromium(1400, 900) as driver:
            driver.set_script_timeout(60)
            driver.get(f"http://127.0.0.1:{server.server_address[1]}/")
            driver.execute_async_script(WAIT_READY)
            data = synthetic(1000, 5000)
            times = [driver.execute_async_script(
                "const done = arguments[1]; window.meshctl.render(arguments[0]).then(done);", data)
                for _ in range(2)]
            counts = driver.execute_script(
                "const cy = window.meshctl.cy;"
                "return [cy.nodes().not('.namespace').length, cy.edges().length]")
            driver.save_screenshot(str(tmp_path / "synthetic.png"))
            assert not console_errors(driver)
    finally:
        server.shutdown()
        server.server_close()
    assert counts == [1000, 5000]
    print(f"\nsynthetic map 1,000 workloads / 5,000 edges: render {times[0]:.0f} ms, again {times[1]:.0f} ms")
    assert max(times) < 2000, times
