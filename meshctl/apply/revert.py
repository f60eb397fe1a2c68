"""A revert stack (Cilium's pkg/revert): every successful step pushes the function that undoes it.

On failure the stack runs the undo functions in reverse order, so a half-done apply unwinds in
the opposite order it was built. An undo that fails does not stop the others: every undo runs
and the failures are collected, because a partial unwind is better than none.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field

UndoFn = Callable[[], None]


@dataclass(frozen=True)
class RevertFailure:
    """One undo that raised: its description and the error."""

    description: str
    error: BaseException

    def __str__(self) -> str:
        return f"{self.description}: {self.error}"


@dataclass
class RevertStack:
    """Undo functions of the steps done so far, newest last."""

    _steps: list[tuple[str, UndoFn]] = field(default_factory=list)

    def push(self, description: str, undo: UndoFn) -> None:
        self._steps.append((description, undo))

    def extend(self, other: RevertStack) -> None:
        """Adopt another stack's steps (they are newer than ours)."""
        self._steps.extend(other._steps)
        other._steps.clear()

    def __len__(self) -> int:
        return len(self._steps)

    @property
    def descriptions(self) -> list[str]:
        return [d for d, _ in self._steps]

    def revert(self) -> list[RevertFailure]:
        """Run every undo newest first; return the ones that failed (empty = clean unwind)."""
        failures: list[RevertFailure] = []
        while self._steps:
            description, undo = self._steps.pop()
            try:
                undo()
            except Exception as err:  # every undo gets its chance; the caller reports the rest
                failures.append(RevertFailure(description, err))
        return failures

    def clear(self) -> None:
        """Forget the undo functions: the steps are now permanent."""
        self._steps.clear()
