"""Options that several commands share, so each flag means and looks the same everywhere."""

from __future__ import annotations

import re
from contextlib import AbstractContextManager
from enum import StrEnum
from typing import Annotated

import typer

from meshctl.errors import MeshctlError


class Output(StrEnum):
    """Reports: text for people, json for programs, markdown for pull-request comments."""

    text = "text"
    json = "json"
    markdown = "markdown"


class TextOrJson(StrEnum):
    """Reports that have no markdown form: the same names as Output."""

    text = "text"
    json = "json"


LockTimeoutOpt = Annotated[str, typer.Option(
    "--lock-timeout", metavar="DURATION",
    help="Wait this long for a state lock held by a running operation (30s, 5m; 0s: refuse at once).")]

_DURATION = re.compile(r"^(\d+(?:\.\d+)?)(ms|s|m|h)?$")
_UNIT_S = {"ms": 0.001, "s": 1.0, "m": 60.0, "h": 3600.0, None: 1.0}


def parse_lock_timeout(text: str) -> float:
    m = _DURATION.match(text.strip())
    if not m:
        raise MeshctlError(f"--lock-timeout: {text!r} is not a duration like 0s, 30s, 5m")
    return float(m.group(1)) * _UNIT_S[m.group(2)]


def lock_wait(text: str) -> AbstractContextManager[None]:
    """The block waits up to --lock-timeout for every state lock it takes."""
    from meshctl.state.lock import lock_timeout

    return lock_timeout(parse_lock_timeout(text))
