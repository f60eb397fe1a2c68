"""meshctl.toml load-balancer settings: kubeProxyReplacement, [loadBalancer], [maglev]."""

from __future__ import annotations

from ipaddress import IPv4Network
from pathlib import Path

import pytest

from meshctl.errors import ConfigError
from meshctl.model.lbconfig import DEFAULT_MAGLEV_SEED
from meshctl.source.config import parse_config

BASE = """[cluster]
name = "t-lbi"
{cluster}
[[nodes]]
name = "n1"
podCIDR = "10.1.1.0/24"
{rest}
"""


def cfg(tmp_path: Path, cluster: str = "", rest: str = ""):  # type: ignore[no-untyped-def]
    return parse_config(BASE.format(cluster=cluster, rest=rest), tmp_path)


def test_defaults(tmp_path: Path) -> None:
    c = cfg(tmp_path)
    lb = c.load_balancer
    assert (lb.kube_proxy_replacement, lb.mode, lb.algorithm, lb.maglev_table_size, lb.maglev_hash_seed) == (
        False, "snat", "random", 16381, DEFAULT_MAGLEV_SEED)
    assert c.service_cidr == IPv4Network("10.96.0.0/16")


def test_every_key(tmp_path: Path) -> None:
    c = cfg(tmp_path, 'kubeProxyReplacement = true\nserviceCIDR = "10.97.0.0/20"',
            '[loadBalancer]\nmode = "dsr"\nalgorithm = "maglev"\n'
            '[maglev]\ntableSize = 251\nhashSeed = "AAAAAAAAAAAAAAAA"\n')
    lb = c.load_balancer
    assert (lb.kube_proxy_replacement, lb.mode, lb.algorithm, lb.maglev_table_size, lb.maglev_hash_seed) == (
        True, "dsr", "maglev", 251, "AAAAAAAAAAAAAAAA")
    assert c.service_cidr == IPv4Network("10.97.0.0/20")
    assert cfg(tmp_path, rest='[loadBalancer]\nmode = "hybrid"').load_balancer.mode == "hybrid"


@pytest.mark.parametrize(("cluster", "rest", "line", "path", "message"), [
    ("", '[loadBalancer]\nmode = "xdp"', 8, "loadBalancer.mode", "'xdp' is not allowed"),
    ("", '[loadBalancer]\nalgorithm = "rr"', 8, "loadBalancer.algorithm", "'rr' is not allowed"),
    ("", "[maglev]\ntableSize = 1000", 8, "maglev.tableSize", "16381"),
    ("", '[maglev]\nhashSeed = "short"', 8, "maglev.hashSeed", "base64"),
    ("", '[maglev]\nhashSeed = "AAAA"', 8, "maglev.hashSeed", "not 12"),
    ("", "[maglev]\ntablesize = 251", 8, "maglev.tablesize", "did you mean 'tableSize'"),
    ('kubeProxyReplacement = "yes"', "", 3, "cluster.kubeProxyReplacement", "yes"),
    ('serviceCIDR = "10.1.0.0/16"', "", 3, "cluster.serviceCIDR", "overlaps podCIDR 10.1.1.0/24"),
    ('serviceCIDR = "10.96.0.0/33"', "", 3, "cluster.serviceCIDR", "not an IPv4 CIDR"),
])
def test_errors(tmp_path: Path, cluster: str, rest: str, line: int, path: str, message: str) -> None:
    with pytest.raises(ConfigError) as info:
        cfg(tmp_path, cluster, rest)
    err = info.value
    assert (err.file, err.line, err.path) == ("meshctl.toml", line, path), str(err)
    assert message in err.message
