"""Where desired-state files come from: a directory, or a git commit read without checkout.

Both list the same files (relative POSIX paths, sorted, hidden files and directories skipped
so `.git/` and `.github/` never load) and read them as UTF-8 text.
"""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path, PurePosixPath
from typing import TYPE_CHECKING, Protocol

from meshctl.errors import SourceError

if TYPE_CHECKING:
    import git

CONFIG_FILE = "meshctl.toml"
YAML_SUFFIXES = (".yaml", ".yml")


class SourceTree(Protocol):
    def files(self) -> list[str]: ...

    def read(self, rel: str) -> str | None:
        """The text of `rel`, or None when it does not exist."""
        ...


def _visible(rel: str) -> bool:
    return not any(part.startswith(".") for part in PurePosixPath(rel).parts)


def _decode(data: bytes, rel: str) -> str:
    try:
        return data.decode("utf-8")
    except UnicodeDecodeError as err:
        raise SourceError(rel, None, "", f"not UTF-8 text ({err.reason} at byte {err.start})") from None


class DirTree:
    def __init__(self, root: Path) -> None:
        self.root = root

    def files(self) -> list[str]:
        out = []
        for path in self.root.rglob("*"):
            rel = path.relative_to(self.root).as_posix()
            if path.is_file() and _visible(rel):
                out.append(rel)
        return sorted(out)

    def read(self, rel: str) -> str | None:
        path = self.root / rel
        if not path.is_file():
            return None
        return _decode(path.read_bytes(), rel)


class GitTree:
    """The tree of `commit` below `subdir` (the desired root inside the repository)."""

    def __init__(self, commit: git.Commit, subdir: str = "") -> None:
        self.commit = commit
        self.subdir = subdir.strip("/")
        tree = commit.tree
        try:
            self.tree = tree / self.subdir if self.subdir else tree
        except KeyError:
            raise SourceError(self.subdir, None, "", f"not present in commit {commit.hexsha[:12]}") from None

    def _blobs(self) -> Iterator[tuple[str, git.Blob]]:
        import git

        base = PurePosixPath(self.tree.path) if self.subdir else PurePosixPath()
        for item in self.tree.traverse():
            if isinstance(item, git.Blob):
                yield PurePosixPath(item.path).relative_to(base).as_posix(), item

    def files(self) -> list[str]:
        return sorted(rel for rel, _ in self._blobs() if _visible(rel))

    def read(self, rel: str) -> str | None:
        import git

        try:
            blob = self.tree / rel
        except KeyError:
            return None
        if not isinstance(blob, git.Blob):
            return None
        return _decode(blob.data_stream.read(), rel)
