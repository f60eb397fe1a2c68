"""`meshctl impact --base main --head <branch>` on a real git repository: the war story."""

from __future__ import annotations

import json
import sys
from pathlib import Path

import pytest
from typer.testing import CliRunner

sys.path.insert(0, str(Path(__file__).parent))
from impact_fixtures import BRANCH, war_story_repo

from meshctl.cli.main import app
from meshctl.impact import compare_revisions
from meshctl.impact.render import render_text


@pytest.fixture(scope="module")
def repo(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return war_story_repo(tmp_path_factory.mktemp("impact"))


def test_cache_to_postgres_breaks_and_names_the_policy(repo: Path) -> None:
    report, _ = compare_revisions(repo, "main", BRANCH, use_lab=False)
    cache = next(p for p in report.pairs if p.src == "production/cache")
    assert (cache.dst, cache.port, cache.protocol) == ("production/postgres", 5432, "tcp")
    assert (cache.base, cache.head) == ("FORWARDED", "DROPPED")
    assert any("database-security" in r and "default deny" in r for r in cache.head_rules)
    assert any("egress-to-postgres" in r for r in cache.base_rules)
    # the backend is the one the new policy lists: it keeps its database
    assert not any(p.src == "production/backend" for p in report.pairs)
    assert report.policies_changed == ("+ CiliumNetworkPolicy production/database-security",)
    assert report.base.commit and report.head.commit and report.base.commit != report.head.commit


def test_no_change_between_equal_revisions(repo: Path) -> None:
    report, _ = compare_revisions(repo, "main", "main", use_lab=False)
    assert report.pairs == () and report.policies_changed == ()
    assert "No connection changes verdict." in render_text(report)


def test_cli_text_and_json(repo: Path) -> None:
    runner = CliRunner()
    res = runner.invoke(app, ["impact", "-C", str(repo), "--base", "main", "--head", BRANCH, "--no-lab"])
    assert res.exit_code == 0, res.output
    assert "production/cache -> production/postgres:5432/tcp  FORWARDED -> DROPPED" in res.stdout
    assert "CiliumNetworkPolicy production/database-security" in res.stdout
    res = runner.invoke(
        app,
        [
            "impact",
            "-C",
            str(repo),
            "--base",
            "main",
            "--head",
            BRANCH,
            "--no-lab",
            "-o",
            "json",
            "--flows-since",
            "0",
        ],
    )
    body = json.loads(res.stdout)
    assert body["format_version"] == "1.0"
    first = body["pairs"][0]
    assert (first["src"], first["dst"], first["port"]) == ("production/cache", "production/postgres", 5432)


def test_unknown_revision_is_one_clear_error(repo: Path) -> None:
    from meshctl.errors import SourceError

    with pytest.raises(SourceError, match="unknown git revision 'no-such-branch'"):
        compare_revisions(repo, "no-such-branch", BRANCH, use_lab=False)
