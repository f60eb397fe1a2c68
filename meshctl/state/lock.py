"""The state lock (state/lock.json), taken with O_CREAT|O_EXCL so exactly one holder wins.

Like Terraform's local backend, a lock is never broken automatically, not even when its pid is
dead (the pid may be on another host sharing the directory, or the holder may have died mid-apply
leaving a journal to recover): the refusal says the holder looks dead, and a person runs
`meshctl state unlock LOCK_ID` after checking. The refusal says what is true: an operation in
progress (its pid, host and start) while its holder lives, a stale lock only when it is gone.
`--lock-timeout` (Terraform's -lock-timeout) waits for a live holder instead of refusing at once:
`with lock_timeout(seconds):` around a command sets it for every lock taken inside.

With the agents, the nodes hold the state and their own locks (apply sessions), and the local
state dir is a cache: `cache_lock` guards it with an flock, which goes with its holder's process,
so a CI runner killed mid-apply leaves no lock for anyone to break.
"""

from __future__ import annotations

import fcntl
import getpass
import json
import os
import socket
import time
import uuid
from collections.abc import Iterator
from contextlib import contextmanager
from contextvars import ContextVar
from dataclasses import asdict, dataclass
from datetime import UTC, datetime
from pathlib import Path
from types import TracebackType

from meshctl.errors import StateError
from meshctl.state.atomic import fsync_dir

LOCK_FILE = "lock.json"
CACHE_LOCK_FILE = "cache.lock"
POLL_S = 0.2

_timeout: ContextVar[float] = ContextVar("lock_timeout", default=0.0)


def wait_s() -> float:
    """How long a lock taken now waits for its holder (--lock-timeout)."""
    return _timeout.get()


@contextmanager
def lock_timeout(seconds: float) -> Iterator[None]:
    """Every StateLock taken (and running_holder) inside waits up to `seconds` for a live holder."""
    token = _timeout.set(max(0.0, seconds))
    try:
        yield
    finally:
        _timeout.reset(token)


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

    @property
    def host(self) -> str:
        return self.owner.rpartition("@")[2]

    def gone(self) -> bool:
        """True only when the holder ran on this host and its process no longer exists."""
        return self.host == socket.gethostname() and not self.pid_alive()

    def in_progress(self) -> str:
        """`an apply by pid 4242 on host-1 is in progress since 2026-...`."""
        article = "an" if self.operation[:1] in "aeiou" else "a"
        return (f"{article} {self.operation} by pid {self.pid} on {self.host} "
                f"is in progress since {self.created}")

    def describe(self) -> str:
        if self.gone():
            return (f"lock {self.id} of {self.operation} by {self.owner} pid {self.pid} "
                    f"since {self.created}, whose process is gone (the lock is stale)")
        return f"{self.in_progress()} (lock {self.id}, {self.owner})"

    def advice(self) -> str:
        """What a person should do about this lock."""
        if self.gone():
            return f"run `meshctl recover` if an apply was interrupted, else `meshctl state unlock {self.id}`"
        if self.host == socket.gethostname():
            return "wait for it to finish, or pass --lock-timeout (e.g. 5m) to wait for it"
        return (f"wait for it (--lock-timeout 5m), or if it no longer runs on {self.host}, "
                f"`meshctl state unlock {self.id}`")


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
        """Take the lock; a live holder is waited for up to the lock timeout, then refused."""
        self.state_dir.mkdir(parents=True, exist_ok=True)
        deadline = time.monotonic() + _timeout.get()
        while True:
            info = self._try()
            if info is not None:
                self.info = info
                return info
            held = read_lock(self.state_dir)
            if held is None:
                continue  # released between our attempt and the read: try again now
            if held.gone() or time.monotonic() >= deadline:
                raise StateError(f"state {self.state_dir} is locked: {held.describe()}; {held.advice()}")
            time.sleep(POLL_S)

    def _try(self) -> LockInfo | None:
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
            return None
        with os.fdopen(fd, "w") as f:
            json.dump(asdict(info), f, indent=2)
            f.flush()
            os.fsync(f.fileno())
        fsync_dir(self.state_dir)
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


def running_holder(state_dir: Path) -> LockInfo | None:
    """The holder of the lock if it is still running (waiting up to the lock timeout for it to
    let go); None when the lock is free or its holder is gone."""
    deadline = time.monotonic() + _timeout.get()
    while True:
        held = read_lock(state_dir)
        if held is None or held.gone():
            return None
        if time.monotonic() >= deadline:
            return held
        time.sleep(POLL_S)


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


@contextmanager
def cache_lock(state_dir: Path, operation: str) -> Iterator[None]:
    """Hold an flock on the local state cache for the block, waiting up to the lock timeout."""
    state_dir.mkdir(parents=True, exist_ok=True)
    path = state_dir / CACHE_LOCK_FILE
    fd = os.open(path, os.O_RDWR | os.O_CREAT, 0o600)
    try:
        deadline = time.monotonic() + _timeout.get()
        while True:
            try:
                fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
                break
            except BlockingIOError:
                if time.monotonic() >= deadline:
                    holder = path.read_text().strip() or "another meshctl"
                    raise StateError(f"state {state_dir} is in use on this host by {holder}; "
                                     "pass --lock-timeout (e.g. 5m) to wait for it") from None
                time.sleep(POLL_S)
        os.ftruncate(fd, 0)
        os.pwrite(fd, f"{operation} by pid {os.getpid()}\n".encode(), 0)
        yield
    finally:
        os.close(fd)  # closing the descriptor lets go of the flock
