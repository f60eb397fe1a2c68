"""meshctl's main() run in the test's own process, as the CLI tests call it."""

from __future__ import annotations

import pytest

from meshctl.cli.main import main


def call(capsys: pytest.CaptureFixture[str], *args: str) -> tuple[int, str, str]:
    """(exit code, stdout, stderr) of `meshctl ARGS`."""
    try:
        main(list(args))
        code = 0
    except SystemExit as exc:
        code = int(exc.code or 0)
    out, err = capsys.readouterr()
    return code, out, err
