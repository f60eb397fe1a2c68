"""The lab registry is read once per version of its file, and every save is what the next load sees."""

from __future__ import annotations

from pathlib import Path

import pytest

from meshctl.lab import registry
from meshctl.lab.registry import NodeRecord, Registry


def _registry(pod_cidr: str) -> Registry:
    node = NodeRecord(name="node-1", netns="mc-reg-node-1", pod_cidr=pod_cidr, underlay_ip="172.31.0.2",
                      underlay_port="u-node-1")
    return Registry(cluster="reg", underlay_netns="mc-reg-u", underlay_cidr="172.31.0.0/24",
                    nodes={"node-1": node})


def test_a_load_is_reused_until_the_file_changes(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("MESHCTL_LAB_DIR", str(tmp_path))
    assert registry.load("reg") is None
    registry.save(_registry("10.1.0.0/24"))
    first = registry.load("reg")
    assert first is not None and first.nodes["node-1"].pod_cidr == "10.1.0.0/24"
    assert registry.load("reg") is first  # the same version of the file: parsed once
    registry.save(_registry("10.2.0.0/24"))
    second = registry.load("reg")
    assert second is not first and second is not None and second.nodes["node-1"].pod_cidr == "10.2.0.0/24"
    registry.registry_path("reg").unlink()
    assert registry.load("reg") is None
