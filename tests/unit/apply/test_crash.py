"""MESHCTL_TEST_CRASH_AT kills the process with SIGKILL at the selected step, and only there."""

from __future__ import annotations

import os
import signal
import subprocess
import sys

import pytest

SCRIPT = (
    "from meshctl.apply.crash import crash_point\n"
    "for step in ('begin:n1', 'reconciled:n1', 'begin:n2'):\n"
    "    crash_point(step)\n"
    "    print(step, flush=True)\n"
)


def run(crash_at: str | None) -> subprocess.CompletedProcess[str]:
    env = {k: v for k, v in os.environ.items() if k != "MESHCTL_TEST_CRASH_AT"}
    if crash_at is not None:
        env["MESHCTL_TEST_CRASH_AT"] = crash_at
    return subprocess.run([sys.executable, "-c", SCRIPT], capture_output=True, text=True, env=env)


@pytest.mark.parametrize(
    ("crash_at", "printed"),
    [("reconciled:n1", ["begin:n1"]), ("begin:*", []), ("3", ["begin:n1", "reconciled:n1"])],
)
def test_dies_at_the_selected_step(crash_at: str, printed: list[str]) -> None:
    res = run(crash_at)
    assert res.returncode == -signal.SIGKILL
    assert res.stdout.split() == printed


@pytest.mark.parametrize("crash_at", [None, "", "verified:*", "9"])
def test_other_values_never_fire(crash_at: str | None) -> None:
    res = run(crash_at)
    assert res.returncode == 0
    assert res.stdout.split() == ["begin:n1", "reconciled:n1", "begin:n2"]
