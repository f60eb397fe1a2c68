"""State lock: one holder, a truthful refusal naming the holder, unlock by id only, --lock-timeout."""

from __future__ import annotations

import json
import socket
import subprocess
import sys
import threading
import time
from pathlib import Path

import pytest

from meshctl.app.workspace import INTERRUPTED, ensure_not_interrupted
from meshctl.errors import StateError
from meshctl.state import Journal, StateLock, read_lock, unlock
from meshctl.state.lock import lock_timeout, running_holder


def test_second_holder_is_refused_with_the_unlock_command(tmp_path: Path) -> None:
    with StateLock(tmp_path, "apply") as info:
        held = read_lock(tmp_path)
        assert held == info and held.operation == "apply"
        with pytest.raises(StateError) as err:
            StateLock(tmp_path, "plan").acquire()
        msg = str(err.value)
        host = socket.gethostname()
        assert f"an apply by pid {info.pid} on {host} is in progress since {info.created}" in msg
        assert info.id in msg and "--lock-timeout" in msg
        assert "stale" not in msg and "unlock" not in msg  # we are alive: nothing to unlock
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
    with pytest.raises(StateError, match=r"whose process is gone \(the lock is stale\)") as err:
        StateLock(tmp_path, "apply").acquire()
    assert f"meshctl state unlock {info.id}" in str(err.value) and "in progress" not in str(err.value)
    assert read_lock(tmp_path) is not None  # like Terraform: still needs an explicit unlock
    with pytest.raises(StateError, match="does not match"):
        unlock(tmp_path, "not-the-id")
    assert unlock(tmp_path, info.id).id == info.id
    with pytest.raises(StateError, match="is not locked"):
        unlock(tmp_path, info.id)
    StateLock(tmp_path, "apply").acquire()  # free again


def _dead_pid() -> int:
    proc = subprocess.run([sys.executable, "-c", "import os; print(os.getpid())"], capture_output=True,
                          text=True, check=True)
    return int(proc.stdout)


def test_lock_timeout_waits_for_a_live_holder(tmp_path: Path) -> None:
    holder = StateLock(tmp_path, "apply")
    holder.acquire()
    threading.Timer(0.5, holder.release).start()
    start = time.monotonic()
    with lock_timeout(5), StateLock(tmp_path, "plan") as info:
        waited = time.monotonic() - start
        assert info.operation == "plan"
    assert 0.4 < waited < 3


def test_lock_timeout_gives_up_after_the_duration(tmp_path: Path) -> None:
    with StateLock(tmp_path, "apply"):
        start = time.monotonic()
        with lock_timeout(0.6), pytest.raises(StateError, match="is in progress since"):
            StateLock(tmp_path, "plan").acquire()
        assert 0.5 < time.monotonic() - start < 2
        start = time.monotonic()
        with pytest.raises(StateError):  # no timeout: at once, as Terraform's -lock-timeout=0s
            StateLock(tmp_path, "plan").acquire()
        assert time.monotonic() - start < 0.2


def test_a_running_apply_is_not_called_interrupted(tmp_path: Path) -> None:
    """An apply in progress has journal records and the lock: say it runs, never 'interrupted'."""
    from meshctl.nodestate import NodeState

    with StateLock(tmp_path, "apply") as info:
        Journal(tmp_path, "sha256:x").begin("node-1", NodeState("node-1"), NodeState("node-1"))
        with pytest.raises(StateError) as err:
            ensure_not_interrupted(tmp_path)
        msg = str(err.value)
        assert msg.startswith(f"an apply by pid {info.pid} on {socket.gethostname()} is in progress since")
        assert "interrupted" not in msg and "recover" not in msg
        assert running_holder(tmp_path) == info
    # The holder is gone (lock released or its pid dead) and the records stay: now it is interrupted.
    with pytest.raises(StateError, match=INTERRUPTED.replace("`", ".")):
        ensure_not_interrupted(tmp_path)
    info = StateLock(tmp_path, "apply").acquire()
    data = json.loads((tmp_path / "lock.json").read_text())
    data["pid"] = _dead_pid()
    (tmp_path / "lock.json").write_text(json.dumps(data))
    assert running_holder(tmp_path) is None
    with pytest.raises(StateError, match="an apply was interrupted"):
        ensure_not_interrupted(tmp_path)


def test_ensure_not_interrupted_waits_for_the_running_apply_to_finish(tmp_path: Path) -> None:
    from meshctl.nodestate import NodeState

    holder = StateLock(tmp_path, "apply")
    holder.acquire()
    journal = Journal(tmp_path, "sha256:x")
    journal.begin("node-1", NodeState("node-1"), NodeState("node-1"))

    def finish() -> None:
        journal.clear()
        holder.release()

    threading.Timer(0.4, finish).start()
    with lock_timeout(5):
        ensure_not_interrupted(tmp_path)  # returns once the apply ended cleanly
    assert read_lock(tmp_path) is None


def test_the_cache_lock_dies_with_its_holder(tmp_path: Path) -> None:
    """With the agents the local state is a cache: its flock is gone the moment its holder is,
    even after kill -9, and nobody has to unlock it."""
    import signal

    from meshctl.state.lock import cache_lock

    holder = subprocess.Popen(
        [sys.executable, "-c", "import sys, time\nfrom pathlib import Path\n"
         "from meshctl.state.lock import cache_lock\n"
         "with cache_lock(Path(sys.argv[1]), 'apply'):\n    print('held', flush=True)\n    time.sleep(60)\n",
         str(tmp_path)], stdout=subprocess.PIPE, text=True)
    try:
        assert holder.stdout is not None and holder.stdout.readline().strip() == "held"
        refused = rf"in use on this host by apply by pid {holder.pid}; pass --lock"
        with pytest.raises(StateError, match=refused), cache_lock(tmp_path, "plan"):
            pass
        holder.send_signal(signal.SIGKILL)
        holder.wait(10)
        with lock_timeout(5), cache_lock(tmp_path, "plan"):
            assert (tmp_path / "cache.lock").read_text().startswith("plan by pid ")
    finally:
        holder.kill()
        holder.wait(10)
