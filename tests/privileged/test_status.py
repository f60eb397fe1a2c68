"""`meshctl status` on a real lab: nodes, programs attached and their build, map fill, agents,
the last apply (plan id, serial, time), and drift (meshctl drift's computation) before and
after a hand change made with bpftool.

One lab for the module: t-fl2-st, a copy of examples/production (three nodes).
"""

from __future__ import annotations

import json
import re
import subprocess
import sys
from collections.abc import Iterator
from ipaddress import IPv4Address
from pathlib import Path

import pytest
from apply_helpers import cli_lab, example_copy

pytestmark = [pytest.mark.privileged, pytest.mark.lab]

REPO = Path(__file__).resolve().parents[2]
MESHCTL = str(Path(sys.executable).with_name("meshctl"))
CLUSTER = "t-fl2-st"


def meshctl(repo: Path, *args: str, timeout: float = 120) -> subprocess.CompletedProcess[str]:
    return subprocess.run([MESHCTL, *args, "-C", str(repo)], capture_output=True, text=True, timeout=timeout)


def status(repo: Path) -> tuple[int, dict]:  # type: ignore[type-arg]
    out = meshctl(repo, "status", "-o", "json")
    assert out.stdout, out.stderr
    return out.returncode, json.loads(out.stdout)


@pytest.fixture(scope="module")
def repo(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Path]:
    dest = tmp_path_factory.mktemp("status") / "production"
    with cli_lab(example_copy("production", dest, CLUSTER, metrics_base_port=19870)):
        yield dest


def test_status_before_and_after_the_first_apply(repo: Path) -> None:
    rc, before = status(repo)
    assert before["cluster"] == CLUSTER and before["last_plan_id"] is None and before["state_serial"] == 0
    assert [n["drift"] for n in before["nodes"]] == ["never applied"] * 3
    assert sum(n["drift_objects"] for n in before["nodes"]) > 0, "what the desired state would apply"

    applied = meshctl(repo, "apply", "--auto-approve")
    assert applied.returncode == 0, applied.stdout + applied.stderr
    rc, st = status(repo)
    assert rc == 0 and st["ok"]
    assert st["state_serial"] == 1 and re.fullmatch(r"sha256:[0-9a-f]{64}", st["last_plan_id"])
    assert st["last_applied_at"] and st["encryption"] == "disabled" and st["load_balancer"] == "disabled"
    assert [n["name"] for n in st["nodes"]] == ["node-1", "node-2", "node-3"]
    for n in st["nodes"]:
        assert n["loaded_build"] == st["current_build"] and n["attachments"] >= 2  # pod veth in + out
        assert n["agent_pid"] and Path(f"/proc/{n['agent_pid']}").exists()
        fill = {m["name"]: m for m in n["maps"]}
        assert fill["endpoints"]["entries"] == n["endpoints"] == 1  # one pod per node
        assert fill["ipcache"]["entries"] >= 3 and fill["ipcache"]["capacity"] > 0
        assert fill["policy_maps"]["entries"] >= 1
        assert (n["drift"], n["drift_objects"], n["error"]) == ("no", 0, "")

    text = meshctl(repo, "status")
    assert text.returncode == 0, text.stderr
    plan = st["last_plan_id"].removeprefix("sha256:")[:12]
    assert f"Last apply:     plan {plan} serial 1 at " in text.stdout
    assert "Flow agents:    3/3 up" in text.stdout and "Drift:          no" in text.stdout
    assert re.search(r"node-1[\s│]+\d+ attached[\s│]+" + st["current_build"][:12], text.stdout)


def test_drift_after_a_hand_change_with_bpftool(repo: Path) -> None:
    _, st = status(repo)
    if st["state_serial"] == 0:  # run alone: apply here; an apply that fails fails this test too
        applied = meshctl(repo, "apply", "--auto-approve")
        assert applied.returncode == 0, applied.stdout + applied.stderr
    pin = Path("/sys/fs/bpf/meshctl") / CLUSTER / "node-1" / "endpoints"
    from meshctl.lab import registry

    ip = registry.pod(CLUSTER, "production/postgres").ip  # postgres lives on node-1
    key = [f"{b}" for b in IPv4Address(ip).packed]
    out = subprocess.run(["bpftool", "map", "delete", "pinned", str(pin), "key", *key],
                         capture_output=True, text=True, timeout=30)
    assert out.returncode == 0, out.stderr
    rc, st = status(repo)
    assert rc == 0  # drift is reported, not an error
    drift = {n["name"]: (n["drift"], n["drift_objects"]) for n in st["nodes"]}
    assert drift == {"node-1": ("yes", 1), "node-2": ("no", 0), "node-3": ("no", 0)}
    text = meshctl(repo, "status")
    assert "Drift:          yes (node-1: 1 object(s)" in text.stdout
    same = meshctl(repo, "drift")  # the same computation: meshctl drift sees the same object
    assert "node node-1: 1 object(s) drifted" in same.stdout, same.stdout + same.stderr
    healed = meshctl(repo, "drift", "--heal")
    assert healed.returncode in (0, 2), healed.stdout + healed.stderr
    _, st = status(repo)
    assert [n["drift"] for n in st["nodes"]] == ["no"] * 3


def test_bad_output_is_one_error_line(repo: Path) -> None:
    out = meshctl(repo, "status", "-o", "yaml")
    assert out.returncode == 1 and "'yaml' is not one of 'text', 'json'" in out.stderr
