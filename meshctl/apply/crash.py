"""Test hook for crash safety: kill this process with SIGKILL at a named apply step.

MESHCTL_TEST_CRASH_AT selects the step: a name (fnmatch pattern, e.g. `reconciled:node-2` or
`begin:*`) or a number N (the Nth crash point reached, counting from 1). Unset in normal use,
so the cost is one dict lookup per step. SIGKILL, not an exception: nothing may clean up, exactly
like a `kill -9` or a power cut.
"""

from __future__ import annotations

import fnmatch
import os
import signal

ENV = "MESHCTL_TEST_CRASH_AT"
_count = 0


def crash_point(step: str) -> None:
    """Mark one step of apply; die here if MESHCTL_TEST_CRASH_AT selects it."""
    global _count
    want = os.environ.get(ENV)
    if not want:
        return
    _count += 1
    if (want.isdigit() and int(want) == _count) or (not want.isdigit() and fnmatch.fnmatchcase(step, want)):
        os.kill(os.getpid(), signal.SIGKILL)
