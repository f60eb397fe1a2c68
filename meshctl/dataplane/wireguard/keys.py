"""WireGuard keys of one node: generated on the node, the private key never leaves its file.

`wg genkey` writes straight into private.key (mode 0600, created with O_EXCL-like care) and
`wg pubkey` reads it from that file: the private key never passes through Python strings, argv,
logs or output. Only public.key (derived) is read back and goes to state and plans.
"""

from __future__ import annotations

import os
import subprocess
from pathlib import Path

from meshctl.errors import DataplaneError

PRIVATE = "private.key"
PUBLIC = "public.key"


def _run_into(argv: list[str], stdin_path: Path | None, out_path: Path, mode: int) -> None:
    tmp = out_path.with_suffix(".tmp")
    tmp.unlink(missing_ok=True)
    fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_EXCL, mode)
    try:
        stdin = open(stdin_path, "rb") if stdin_path else subprocess.DEVNULL  # noqa: SIM115
        try:
            proc = subprocess.run(argv, stdin=stdin, stdout=fd, stderr=subprocess.PIPE, check=False)
        finally:
            if stdin_path:
                stdin.close()  # type: ignore[union-attr]
        os.fsync(fd)
    finally:
        os.close(fd)
    if proc.returncode != 0:
        tmp.unlink(missing_ok=True)
        raise DataplaneError(f"wg {argv[1]}", str(out_path.parent), 0, proc.stderr.decode().strip())
    os.chmod(tmp, mode)
    os.replace(tmp, out_path)


def generate(directory: Path) -> str:
    """A fresh key pair in `directory`; the old pair is kept as *.prev so a revert can go back."""
    directory.mkdir(parents=True, exist_ok=True, mode=0o700)
    os.chmod(directory, 0o700)
    for name in (PRIVATE, PUBLIC):
        if (directory / name).exists():
            os.replace(directory / name, directory / f"{name}.prev")
    _run_into(["wg", "genkey"], None, directory / PRIVATE, 0o600)
    _run_into(["wg", "pubkey"], directory / PRIVATE, directory / PUBLIC, 0o644)
    return read_public(directory)


def ensure(directory: Path) -> str:
    """The node's public key, generating the pair on first use."""
    if (directory / PRIVATE).exists() and (directory / PUBLIC).exists():
        return read_public(directory)
    return generate(directory)


def restore(directory: Path, public: str) -> bool:
    """Make `public` the current key again if it is the previous pair (revert of a rotation)."""
    try:
        prev = (directory / f"{PUBLIC}.prev").read_text().strip()
    except FileNotFoundError:
        return False
    if prev != public or not (directory / f"{PRIVATE}.prev").exists():
        return False
    for name in (PRIVATE, PUBLIC):
        cur, old = directory / name, directory / f"{name}.prev"
        tmp = directory / f"{name}.swap"
        os.replace(cur, tmp)
        os.replace(old, cur)
        os.replace(tmp, old)
    return True


def read_public(directory: Path) -> str:
    """The public key, or "" when the node has no key yet."""
    try:
        return (directory / PUBLIC).read_text().strip()
    except FileNotFoundError:
        return ""


def private_path(directory: Path) -> Path:
    """Path handed to `wg set ... private-key PATH`; callers never read it."""
    return directory / PRIVATE
