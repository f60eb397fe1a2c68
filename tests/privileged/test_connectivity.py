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

pytestmark = [pytest.mark.privileged, pytest.mark.lab]

REPO = Path(__file__).resolve().parents[2]
MESHCTL = str(Path(sys.executable).with_name("meshctl"))
CLUSTER = "t-fl-war"
BASE_PORT = 19760


def meshctl(repo: Path, *args: str, timeout: float = 120) -> subprocess.CompletedProcess[str]:
    return subprocess.run([MESHCTL, *args, "-C", str(repo)], capture_output=True, text=True, timeout=timeout)


def drops_metric(port: int) -> float:
    text = urllib.request.urlopen(f"http://127.0.0.1:{port}/metrics", timeout=5).read().decode()
    return sum(float(m.group(1)) for m in re.finditer(r'(?m)^meshctl_drops_total\{[^}]*\} ([0-9.e+]+)$', text))


@pytest.fixture(scope="module")
def repo(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Path]:
    dest = tmp_path_factory.mktemp("war") / "production"
    shutil.copytree(REPO / "examples" / "production", dest)
    toml = dest / "meshctl.toml"
    text = re.sub(r'(?m)^name = "production"', f'name = "{CLUSTER}"', toml.read_text())
    text = re.sub(r"(?m)^verifyWindow = .*$", "verifyWindow = 0.05", text)
    toml.write_text(text + f"\n[observability]\nmetricsBasePort = {BASE_PORT}\n")
    try:
        up = meshctl(dest, "lab", "up")
        assert up.returncode == 0, up.stderr
        yield dest
    finally:
        meshctl(dest, "lab", "down")


def test_war_story(repo: Path) -> None:
    first = meshctl(repo, "apply", "--auto-approve")
    assert first.returncode == 0, first.stdout + first.stderr
    ok = meshctl(repo, "connectivity", "test", "--check", "cache-to-postgres")
    assert ok.returncode == 0, ok.stdout + ok.stderr
    assert "[PASS] cache-to-postgres" in ok.stdout and "FORWARDED" in ok.stdout

    # postgres lives on node-1 (first node): its agent serves metrics on the base port.
    before = drops_metric(BASE_PORT)
    shutil.copy(REPO / "examples" / "production-changes" / "database-security.yaml", repo / "policies")
    second = meshctl(repo, "apply", "--auto-approve")
    assert second.returncode == 0, second.stdout + second.stderr

    from meshctl.lab import probe, registry

    pg = registry.pod(CLUSTER, "production/postgres")
    assert not probe.connect(CLUSTER, "production/cache", pg.address, 5432, "TCP", 0.3).ok
    t0 = time.monotonic()
    line = ""
    while time.monotonic() - t0 < 1.0 and not line:
        out = meshctl(repo, "observe", "--to-pod", "production/postgres", "--verdict", "DROPPED", "--since", "10s")
        assert out.returncode == 0, out.stderr
        line = next((ln for ln in out.stdout.splitlines() if "production/cache" in ln), "")
    assert line, "no drop shown within a second"
    assert ("DROPPED (default deny: production/postgres ingress isolated by "
            "CiliumNetworkPolicy production/database-security)") in line or "database-security" in line
    assert drops_metric(BASE_PORT) > before

    js = meshctl(repo, "observe", "--to-pod", "production/postgres", "--verdict", "DROPPED", "-o", "json")
    rows = [json.loads(x) for x in js.stdout.splitlines()]
    assert rows and all(r["verdict"] == "DROPPED" and r["dst_pod"] == "production/postgres" for r in rows)
    assert any("database-security" in " ".join(r["isolated_by"]) for r in rows)

    red = meshctl(repo, "connectivity", "test")
    assert red.returncode == 1
    assert "[FAIL] cache-to-postgres" in red.stdout and "[PASS] backend-to-postgres" in red.stdout

    st = meshctl(repo, "status", "-o", "json")
    data = json.loads(st.stdout)
    assert st.returncode == 0, st.stdout + st.stderr
    assert data["state_serial"] >= 2 and data["last_plan_id"]
    assert all(n["agent_pid"] and n["loaded_build"] == data["current_build"] for n in data["nodes"])
    assert all(n["drift"] == "no" for n in data["nodes"])
    assert data["encryption"] == "disabled"
