"""The war story end to end in a real lab: apply `database-security`, cache -> postgres breaks,
`meshctl observe` shows the drop within a second naming the policy, the drop counter rises,
`meshctl connectivity test` turns red, and `meshctl status` reports the cluster.

One lab for the module (t-fl-war, a copy of examples/production); the agents come from
`meshctl lab up` (meshctl/lab/agents.py).
"""

from __future__ import annotations

import json
import re
import shutil
import subprocess
import sys
import time
import urllib.request
from collections.abc import Iterator
from pathlib import Path

import pytest
from apply_helpers import cli_lab, example_copy

pytestmark = [pytest.mark.privileged, pytest.mark.lab]

REPO = Path(__file__).resolve().parents[2]
MESHCTL = str(Path(sys.executable).with_name("meshctl"))
CLUSTER = "t-fl-war"
BASE_PORT = 19760


def meshctl(repo: Path, *args: str, timeout: float = 120) -> subprocess.CompletedProcess[str]:
    return subprocess.run([MESHCTL, *args, "-C", str(repo)], capture_output=True, text=True, timeout=timeout)


def drops_metric(port: int) -> float:
    text = urllib.request.urlopen(f"http://127.0.0.1:{port}/metrics", timeout=5).read().decode()
    pattern = r"(?m)^meshctl_drop_total\{[^}]*\} ([0-9.e+]+)$"
    return sum(float(m.group(1)) for m in re.finditer(pattern, text))


@pytest.fixture(scope="module")
def repo(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Path]:
    dest = tmp_path_factory.mktemp("war") / "production"
    with cli_lab(example_copy("production", dest, CLUSTER, metrics_base_port=BASE_PORT)):
        yield dest


def observe(repo: Path, *args: str) -> list[str]:
    out = meshctl(repo, "observe", *args)
    assert out.returncode == 0, out.stderr
    return out.stdout.splitlines()


def test_war_story(repo: Path) -> None:
    first = meshctl(repo, "apply", "--auto-approve")
    assert first.returncode == 0, first.stdout + first.stderr
    ok = meshctl(repo, "connectivity", "test")
    assert ok.returncode == 0, ok.stdout + ok.stderr
    print(ok.stdout)
    assert "[PASS] cache-to-postgres" in ok.stdout and "(cross node)" in ok.stdout
    assert "flow: " in ok.stdout and "FORWARDED" in ok.stdout

    # postgres lives on node-1 (the first node): its agent serves metrics on the base port.
    before = drops_metric(BASE_PORT)
    shutil.copy(REPO / "examples" / "production-changes" / "database-security.yaml", repo / "policies")
    second = meshctl(repo, "apply", "--auto-approve")
    # apply's own check (cache-to-postgres) catches the break and reverts node-1 ...
    assert second.returncode == 1 and "cache-to-postgres" in second.stdout + second.stderr
    # ... and the flow store already shows why, within a second, naming the policy.
    t0 = time.monotonic()
    lines: list[str] = []
    while time.monotonic() - t0 < 1.0 and not lines:
        lines = [ln for ln in observe(repo, "--to-pod", "production/postgres", "--verdict", "DROPPED",
                                      "--since", "1m") if "production/cache" in ln]
    assert lines, "no drop shown within a second"
    print(f"\nobserve after {time.monotonic() - t0:.2f}s: {lines[-1]}")
    assert ("DROPPED (default deny: production/postgres ingress isolated by "
            "CiliumNetworkPolicy production/database-security)") in lines[-1]
    assert drops_metric(BASE_PORT) > before

    rows = [json.loads(x) for x in observe(repo, "--to-pod", "production/postgres", "--verdict", "DROPPED",
                                           "-o", "json")]
    assert rows and all(r["verdict"] == "DROPPED" and r["dst_pod"] == "production/postgres" for r in rows)

    # A check that expects the wrong thing fails the connectivity test (exit 1).
    (repo / "checks" / "wrong.yaml").write_text(
        "apiVersion: meshctl.io/v1alpha1\nkind: ConnectivityCheck\nmetadata: {name: cache-denied}\n"
        "spec: {from: production/cache, to: production/postgres, port: 5432, expect: denied}\n")
    red = meshctl(repo, "connectivity", "test", "--check", "cache-denied")
    assert red.returncode == 1 and "[FAIL] cache-denied" in red.stdout, red.stdout + red.stderr

    st = meshctl(repo, "status", "-o", "json")
    data = json.loads(st.stdout)
    assert st.returncode == 0, st.stdout + st.stderr
    assert data["state_serial"] >= 1 and data["last_plan_id"]
    assert all(n["agent_pid"] and n["loaded_build"] == data["current_build"] for n in data["nodes"])
    # the reverted policy is not applied on node-1; nothing was changed on a node by hand
    assert {n["name"]: n["drift"] for n in data["nodes"]} == {
        "node-1": "not applied", "node-2": "no", "node-3": "no"}
    assert data["encryption"] == "disabled"
