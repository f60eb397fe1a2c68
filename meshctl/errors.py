"""The error tree: every expected failure is a MeshctlError with one clear message.

The CLI prints `str(error)` on one line to stderr and exits 1; anything else is a bug.
"""

from __future__ import annotations


class MeshctlError(Exception):
    """Base of every expected error."""


class SourceError(MeshctlError):
    """Bad desired-state input: names the file, the line and the field path."""

    def __init__(self, file: str, line: int | None, path: str, message: str) -> None:
        self.file, self.line, self.path, self.message = file, line, path, message
        where = f"{file}:{line}" if line else file
        field = f" {path}:" if path else ""
        super().__init__(f"{where}:{field} {message}")


class ConfigError(SourceError):
    """Bad meshctl.toml."""


class CompileError(MeshctlError):
    """Desired state that loads but cannot be compiled (e.g. a map would overflow)."""


class DataplaneError(MeshctlError):
    """A kernel operation failed: names the operation, the object and errno."""

    def __init__(self, op: str, obj: str, errno: int, detail: str = "") -> None:
        import os

        self.op, self.obj, self.errno, self.detail = op, obj, errno, detail
        msg = f"{op} {obj}: {os.strerror(errno) if errno else 'failed'}"
        if errno:
            msg += f" (errno {errno})"
        if detail:
            msg += f"\n{detail}"
        super().__init__(msg)


class ObserveError(MeshctlError):
    """Reading a node's live state failed."""

    def __init__(self, node: str, message: str) -> None:
        self.node = node
        super().__init__(f"node {node}: {message}")


class LabError(MeshctlError):
    """Bad lab topology or a failed lab operation."""


class PlanError(MeshctlError):
    """An unreadable, tampered or incompatible plan file."""


class PlanStaleError(PlanError):
    """The saved plan no longer matches the live state or the state serial."""


class StateError(MeshctlError):
    """The state directory is locked, corrupt or inconsistent."""


class ApplyError(MeshctlError):
    """Apply failed (and was reverted as configured)."""


class RollbackError(ApplyError):
    """Revert after a failed apply failed too: the node needs `meshctl recover`."""
