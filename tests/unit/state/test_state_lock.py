"""State lock: one holder, a clear refusal naming the holder, unlock by id only."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest

from meshctl.errors import StateError
from meshctl.state import StateLock, read_lock, unlock


def test_second_holder_is_refused_with_the_unlock_command(tmp_path: Path) -> None:
    with StateLock(tmp_path, "apply") as info:
        held = read_lock(tmp_path)
        assert held == info and held.operation == "apply"
        with pytest.raises(StateError) as err:
            StateLock(tmp_path, "plan").acquire()
        msg = str(err.value)
        assert f"meshctl state unlock {info.id}" in msg
        assert info.owner in msg and "apply" in msg
        assert "stale" not in msg  # we are alive
    assert read_lock(tmp_path) is None


def test_dead_holder_is_reported_but_not_broken(tmp_path: Path) -> None:
    proc = subprocess.run([sys.executable, "-c", "import os; print(os.getpid())"], capture_output=True,
                          text=True, check=True)
    dead_pid = int(proc.stdout)
    lock = StateLock(tmp_path, "apply")
    info = lock.acquire()
    data = json.loads((tmp_path / "lock.json").read_text())
    data["pid"] = dead_pid
    (tmp_path / "lock.json").write_text(json.dumps(data))
    with pytest.raises(StateError, match=r"that process is gone: the lock is stale"):
        StateLock(tmp_path, "apply").acquire()
    assert read_lock(tmp_path) is not None  # like Terraform: still needs an explicit unlock
    with pytest.raises(StateError, match="does not match"):
        unlock(tmp_path, "not-the-id")
    assert unlock(tmp_path, info.id).id == info.id
    with pytest.raises(StateError, match="is not locked"):
        unlock(tmp_path, info.id)
    StateLock(tmp_path, "apply").acquire()  # free again
