"""The state lock (state/lock.json), taken with O_CREAT|O_EXCL so exactly one holder wins.

Like Terraform's local backend, a lock is never broken automatically, not even when its pid is
dead (the pid may be on another host sharing the directory, or the holder may have died mid-apply
leaving a journal to recover): the refusal says the holder looks dead, and a person runs
`meshctl state unlock LOCK_ID` after checking.
"""

from __future__ import annotations

import getpass
import json
import os
import socket
import uuid
from dataclasses import asdict, dataclass
from datetime import UTC, datetime
from pathlib import Path
from types import TracebackType

from meshctl.errors import StateError
from meshctl.state.atomic import fsync_dir

LOCK_FILE = "lock.json"


@dataclass(frozen=True)
class LockInfo:
    id: str
    owner: str  # user@host
    pid: int
    operation: str
    created: str

    def pid_alive(self) -> bool:
        """Only meaningful on the host that took the lock."""
        try:
            os.kill(self.pid, 0)
        except ProcessLookupError:
            return False
        except PermissionError:
            return True
        return True

    def describe(self) -> str:
        host = self.owner.rpartition("@")[2]
        dead = host == socket.gethostname() and not self.pid_alive()
        state = " (that process is gone: the lock is stale)" if dead else ""
        return (
            f"lock {self.id} held by {self.owner} pid {self.pid}{state}, "
            f"{self.operation} since {self.created}"
        )


def read_lock(state_dir: Path) -> LockInfo | None:
    path = state_dir / LOCK_FILE
    try:
        return LockInfo(**json.loads(path.read_text()))
    except FileNotFoundError:
        return None
    except (OSError, ValueError, TypeError) as err:
        raise StateError(
            f"{path}: unreadable lock file ({err}); remove it by hand if no one holds it"
        ) from err


class StateLock:
    """Context manager: `with StateLock(dir, "apply") as info:` holds the lock for the block."""

    def __init__(self, state_dir: Path, operation: str) -> None:
        self.state_dir = state_dir
        self.operation = operation
        self.info: LockInfo | None = None

    def acquire(self) -> LockInfo:
        self.state_dir.mkdir(parents=True, exist_ok=True)
        path = self.state_dir / LOCK_FILE
        info = LockInfo(
            id=str(uuid.uuid4()),
            owner=f"{_user()}@{socket.gethostname()}",
            pid=os.getpid(),
            operation=self.operation,
            created=datetime.now(UTC).isoformat(timespec="seconds"),
        )
        try:
            fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o644)
        except FileExistsError:
            held = read_lock(self.state_dir)
            what = held.describe() if held else "a lock that vanished while being read; try again"
            unlock_id = held.id if held else "LOCK_ID"
            raise StateError(
                f"state {self.state_dir} is locked: {what}. If no one is using it, run "
                f"`meshctl state unlock {unlock_id}`"
            ) from None
        with os.fdopen(fd, "w") as f:
            json.dump(asdict(info), f, indent=2)
            f.flush()
            os.fsync(f.fileno())
        fsync_dir(self.state_dir)
        self.info = info
        return info

    def release(self) -> None:
        if self.info is not None:
            unlock(self.state_dir, self.info.id)
            self.info = None

    def __enter__(self) -> LockInfo:
        return self.acquire()

    def __exit__(
        self, t: type[BaseException] | None, e: BaseException | None, tb: TracebackType | None
    ) -> None:
        self.release()


def unlock(state_dir: Path, lock_id: str) -> LockInfo:
    """Remove the lock if its id is `lock_id` (the id guards against removing someone else's)."""
    held = read_lock(state_dir)
    if held is None:
        raise StateError(f"state {state_dir} is not locked")
    if held.id != lock_id:
        raise StateError(f"lock id {lock_id} does not match the held {held.describe()}")
    (state_dir / LOCK_FILE).unlink()
    fsync_dir(state_dir)
    return held


def _user() -> str:
    try:
        return getpass.getuser()
    except (KeyError, OSError):
        return str(os.getuid())
