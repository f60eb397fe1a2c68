"""The [observability] table of meshctl.toml as the agent reads it (repo_info)."""

from __future__ import annotations

from pathlib import Path

import pytest

from meshctl.errors import ConfigError
from meshctl.flows.context import change_token, repo_info

BASE = """[cluster]
name = "t-fl-ctx"

[[nodes]]
name = "a"
podCIDR = "10.9.1.0/24"

[[nodes]]
name = "b"
podCIDR = "10.9.2.0/24"
"""


def write(tmp_path: Path, extra: str = "") -> Path:
    (tmp_path / "meshctl.toml").write_text(BASE + extra)
    return tmp_path


def test_defaults_and_per_node_ports(tmp_path: Path) -> None:
    info = repo_info(write(tmp_path))
    assert (info.retention, info.max_rows, info.metrics_base_port) == ("24h", 1_000_000, 9690)
    assert (info.metrics_port("a"), info.metrics_port("b")) == (9690, 9691)
    assert info.state_dir == (tmp_path / "state").resolve()


def test_observability_table(tmp_path: Path) -> None:
    info = repo_info(write(tmp_path, '\n[observability]\nflowRetention = "2h"\nflowMaxRows = 500\n'
                                     'metricsBasePort = 0\n'))
    assert (info.retention, info.max_rows, info.metrics_port("a")) == ("2h", 500, 0)


@pytest.mark.parametrize("body", ['flowRetention = "soon"', "flowMaxRows = 0", "metricsPort = 1"])
def test_bad_observability_is_a_config_error(tmp_path: Path, body: str) -> None:
    with pytest.raises(ConfigError, match="observability"):
        repo_info(write(tmp_path, f"\n[observability]\n{body}\n"))


def test_change_token_follows_repo_files(tmp_path: Path) -> None:
    info = repo_info(write(tmp_path))
    before = change_token(info)
    (tmp_path / "policies").mkdir()
    (tmp_path / "policies" / "p.yaml").write_text("kind: X\n")
    assert change_token(info) != before
