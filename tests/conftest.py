"""Shared test configuration: privileged tests need root (CI runs as root)."""

from __future__ import annotations

import os
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parent.parent


def pytest_collection_modifyitems(config: pytest.Config, items: list[pytest.Item]) -> None:
    if os.geteuid() == 0:
        return
    skip = pytest.mark.skip(reason="privileged test: needs root")
    for item in items:
        if "privileged" in item.keywords:
            item.add_marker(skip)


@pytest.fixture(scope="session")
def repo_root() -> Path:
    return REPO


@pytest.fixture(scope="session", autouse=True)
def map_cache_dir(tmp_path_factory: pytest.TempPathFactory) -> None:
    """meshctl.observe.mapcache writes into a per-session directory (inherited by subprocesses),
    never into the user's ~/.cache."""
    os.environ.setdefault("MESHCTL_CACHE_DIR", str(tmp_path_factory.mktemp("meshctl-cache")))
