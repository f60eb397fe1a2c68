"""`[inventory]` in meshctl.toml: source, kubeconfig and context; unknown keys stay errors."""

from __future__ import annotations

from pathlib import Path

import pytest

from meshctl.errors import ConfigError
from meshctl.source import parse_config

BASE = '[cluster]\nname = "t-go-cfg"\n[[nodes]]\nname = "n1"\npodCIDR = "10.1.0.0/24"\n'


def test_default_is_the_repo() -> None:
    assert parse_config(BASE, Path("/tmp")).inventory.source == "repo"


def test_kubernetes_inventory_settings() -> None:
    text = BASE + '[inventory]\nsource = "kubernetes"\nkubeconfig = "kc.yaml"\ncontext = "prod"\n'
    inv = parse_config(text, Path("/tmp")).inventory
    assert (inv.source, inv.kubeconfig, inv.context) == ("kubernetes", "kc.yaml", "prod")


def test_unknown_key_and_bad_source_name_the_line() -> None:
    with pytest.raises(ConfigError, match=r"meshctl.toml:7: inventory.sorce: unknown field"):
        parse_config(BASE + '[inventory]\nsorce = "kubernetes"\n', Path("/tmp"))
    with pytest.raises(ConfigError, match=r"inventory.source: 'k8s' is not allowed"):
        parse_config(BASE + '[inventory]\nsource = "k8s"\n', Path("/tmp"))
