"""meshctl.toml: defaults, camelCase keys, and errors with file:line: key."""

from __future__ import annotations

from ipaddress import IPv4Network
from pathlib import Path

import pytest

from meshctl.errors import ConfigError
from meshctl.source.config import parse_config, toml_lines

MINIMAL = """
[cluster]
name = "c1"

[[nodes]]
name = "n1"
podCIDR = "10.1.1.0/24"

[[nodes]]
name = "n2"
podCIDR = "10.1.2.0/24"
"""


def test_defaults(tmp_path: Path) -> None:
    cfg = parse_config(MINIMAL, tmp_path)
    assert cfg.cluster == "c1"
    assert [(n.name, n.pod_cidr) for n in cfg.nodes] == [
        ("n1", IPv4Network("10.1.1.0/24")),
        ("n2", IPv4Network("10.1.2.0/24")),
    ]
    assert cfg.policy_enforcement_mode == "default"
    assert cfg.state_dir == tmp_path.resolve() / "state"
    assert cfg.plans_dir == tmp_path.resolve() / "plans"
    r = cfg.rollout
    assert (r.canary, r.batch_size, r.verify_window_s, r.drop_rate_threshold, r.rollback) == (
        ("n1",),
        1,
        2.0,
        0.0,
        "node",
    )
    assert cfg.datapath.ipv6 == "drop"
    assert cfg.lab.underlay_cidr == IPv4Network("172.31.250.0/24")
    assert cfg.node("n2") is not None and cfg.node("zz") is None


def test_every_key(tmp_path: Path) -> None:
    text = (
        MINIMAL.replace('name = "c1"', 'name = "c1"\npolicyEnforcementMode = "always"')
        + """
[state]
dir = "/var/lib/meshctl"
[plans]
dir = "out/plans"
[rollout]
canary = ["n2", "n1"]
batchSize = 2
verifyWindow = 0.5
dropRateThreshold = 3
rollback = "all"
[datapath]
ipv6 = "pass"
[lab]
underlayCIDR = "172.30.0.0/24"
"""
    )
    cfg = parse_config(text, tmp_path)
    assert cfg.policy_enforcement_mode == "always"
    assert cfg.state_dir == Path("/var/lib/meshctl")
    assert cfg.plans_dir == tmp_path.resolve() / "out/plans"
    assert cfg.rollout.canary == ("n2", "n1") and cfg.rollout.batch_size == 2
    assert cfg.rollout.verify_window_s == 0.5 and cfg.rollout.drop_rate_threshold == 3.0
    assert cfg.rollout.rollback == "all" and cfg.datapath.ipv6 == "pass"
    assert cfg.lab.underlay_cidr == IPv4Network("172.30.0.0/24")


@pytest.mark.parametrize(
    ("extra", "expected"),
    [
        ("[rollout]\nbatchSize = 0\n", "meshctl.toml:14: rollout.batchSize: Input should be greater than"),
        (
            "[rollout]\nbatchsize = 2\n",
            "meshctl.toml:14: rollout.batchsize: unknown field; did you mean 'batchSize'?",
        ),
        (
            '[rollout]\ncanary = "n9"\n',
            "meshctl.toml:14: rollout.canary: unknown node 'n9'; nodes are n1, n2",
        ),
        ('[datapath]\nipv6 = "allow"\n', "meshctl.toml:14: datapath.ipv6: 'allow' is not allowed"),
        ('[lab]\nunderlayCIDR = "10.1.0.0/16"\n', "meshctl.toml:14: lab.underlayCIDR: 10.1.0.0/16 overlaps"),
        ("[surprise]\nx = 1\n", "meshctl.toml:13: surprise: unknown field"),
    ],
)
def test_schema_errors_name_the_line(tmp_path: Path, extra: str, expected: str) -> None:
    with pytest.raises(ConfigError) as info:
        parse_config(MINIMAL + "\n" + extra, tmp_path)
    assert str(info.value).startswith(expected), str(info.value)


def test_node_errors(tmp_path: Path) -> None:
    with pytest.raises(ConfigError, match=r"meshctl.toml:11: nodes\[1\].podCIDR: '10.1.2.0/33'"):
        parse_config(MINIMAL.replace("10.1.2.0/24", "10.1.2.0/33"), tmp_path)
    with pytest.raises(ConfigError, match="overlaps"):
        parse_config(MINIMAL.replace("10.1.2.0/24", "10.1.0.0/16"), tmp_path)
    with pytest.raises(ConfigError, match="declared twice"):
        parse_config(MINIMAL.replace('"n2"', '"n1"'), tmp_path)
    with pytest.raises(ConfigError, match=r"meshctl.toml:\d+: nodes\[0\].name: 'Node_1' is not a valid name"):
        parse_config(MINIMAL.replace('"n1"', '"Node_1"', 1), tmp_path)
    with pytest.raises(ConfigError, match="nodes: "):
        parse_config('[cluster]\nname = "c"\nnodes = []\n', tmp_path)


def test_missing_cluster_and_syntax_error(tmp_path: Path) -> None:
    with pytest.raises(ConfigError, match=r"meshctl\.toml: cluster: required field is missing"):
        parse_config('[[nodes]]\nname = "n"\npodCIDR = "10.0.0.0/24"\n', tmp_path)
    with pytest.raises(ConfigError, match=r"meshctl.toml:3: invalid TOML: Invalid value$"):
        parse_config('[cluster]\nname = "c"\nbroken = \n', tmp_path)
    with pytest.raises(ConfigError, match=r"meshctl.toml:2: invalid TOML: Unterminated string$"):
        parse_config('[cluster]\nname = "c', tmp_path)
    with pytest.raises(ConfigError, match=r"meshctl.toml:3: invalid TOML: Cannot overwrite a value$"):
        parse_config('[cluster]\nname = "c"\nname = "d"\n', tmp_path)


def test_toml_lines() -> None:
    lines = toml_lines(MINIMAL)
    assert lines[("cluster", "name")] == 3
    assert lines[("nodes", 1)] == 9 and lines[("nodes", 1, "podCIDR")] == 11
