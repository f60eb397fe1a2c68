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


def test_rules_come_from_the_applied_revision_not_the_working_tree(tmp_path: Path) -> None:
    """A plan records the rule behind every cookie of its target; apply stores them in the state;
    the agent's names for a drop then stay those of the applied revision when the working tree
    renames the policy afterwards (and the compiled ones stand in before any apply)."""
    import shutil
    from ipaddress import IPv4Address

    from meshctl.flows.context import load_context
    from meshctl.plan.build import target_rules
    from meshctl.plan.model import rule_json
    from meshctl.source import load_desired
    from meshctl.state import load_state, save_state
    from meshctl.state.tables import compile_desired

    repo = tmp_path / "repo"
    shutil.copytree(Path(__file__).resolve().parents[3] / "examples" / "three-tier", repo,
                    ignore=shutil.ignore_patterns("state", "plans"))
    info = repo_info(repo)
    state = load_state(info.state_dir)
    desired = load_desired(repo)
    desired = desired.with_pod_ips({f"{p.namespace}/{p.name}": IPv4Address(f"10.101.{i}.9")
                                    for i, p in enumerate(desired.pods, start=1)})
    compiled = compile_desired(desired, state, "")
    rules = dict(target_rules(compiled.nodes, compiled.catalog))  # what build_plan records
    assert rules and {o.name for o in rules.values()} >= {"api-from-frontend", "frontend-to-api"}
    cookie = next(c for c, o in rules.items() if o.name == "api-from-frontend")
    assert load_context(info, "node-2").catalog.cookies[cookie].name == "api-from-frontend"

    save_state(info.state_dir, state.record_apply("sha256:applied", {}, rules={
        str(c): rule_json(o) for c, o in rules.items()}))
    policy = repo / "policies" / "frontend-to-api.yaml"
    policy.write_text("# moved down\n\n" + policy.read_text().replace("name: api-from-frontend",
                                                                     "name: renamed-in-the-tree"))
    applied = load_context(info, "node-2").catalog.cookies[cookie]
    assert (applied.name, applied.line) == ("api-from-frontend", rules[cookie].line)
