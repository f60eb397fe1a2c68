"""The war story as a real git repository: main = examples/production, a branch adds database-security."""

from __future__ import annotations

import shutil
from pathlib import Path

import git

REPO = Path(__file__).resolve().parents[3]
PRODUCTION = REPO / "examples" / "production"
CHANGE = REPO / "examples" / "production-changes" / "database-security.yaml"
BRANCH = "database-security"


def war_story_repo(root: Path) -> Path:
    repo_dir = root / "desired"
    shutil.copytree(PRODUCTION, repo_dir, ignore=shutil.ignore_patterns("state", "plans"))
    repo = git.Repo.init(repo_dir, initial_branch="main")
    with repo.config_writer() as cw:
        cw.set_value("user", "name", "t-go").set_value("user", "email", "t-go@example.invalid")
    repo.git.add(A=True)
    repo.index.commit("production: backend and cache reach postgres")
    repo.git.checkout("-b", BRANCH)
    shutil.copy(CHANGE, repo_dir / "policies" / CHANGE.name)
    repo.git.add(A=True)
    repo.index.commit("tighten database access")
    repo.git.checkout("main")
    return repo_dir
