"""The parsed-YAML cache: a warm load equals a cold one, parses only what changed, stays small."""

from __future__ import annotations

import marshal
from pathlib import Path

import pytest

from meshctl.errors import SourceError
from meshctl.source import load_desired, yamlcache
from meshctl.source.yamlcache import open_cache

CONFIG = """
[cluster]
name = "t"
[[nodes]]
name = "node-1"
podCIDR = "10.9.1.0/24"
"""

NAMESPACES = """
apiVersion: v1
kind: Namespace
metadata: {name: demo, labels: {team: a}}
---
apiVersion: v1
kind: Namespace
metadata: {name: other}
"""

PODS = """
apiVersion: v1
kind: Pod
metadata: {name: web, namespace: demo, labels: {app: web}}
spec:
  nodeName: node-1
  containers: [{name: c, image: nginx, ports: [{name: http, containerPort: 80}]}]
---
apiVersion: v1
kind: Pod
metadata:
  name: db
  namespace: other
  labels: {app: db}
spec: {nodeName: node-1}
"""

POLICY = """
apiVersion: cilium.io/v2
kind: CiliumNetworkPolicy
metadata: {name: db-in, namespace: other}
spec:
  endpointSelector: {matchLabels: {app: db}}
  ingress:
    - fromEndpoints: [{matchLabels: {app: web}}]
      toPorts: [{ports: [{port: "5432", protocol: TCP}]}]
"""


@pytest.fixture
def repo(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    monkeypatch.setenv("MESHCTL_CACHE_DIR", str(tmp_path / "cache"))
    root = tmp_path / "repo"
    (root / "inventory").mkdir(parents=True)
    (root / "policies").mkdir()
    (root / "meshctl.toml").write_text(CONFIG)
    (root / "inventory" / "namespaces.yaml").write_text(NAMESPACES)
    (root / "inventory" / "pods.yaml").write_text(PODS)
    (root / "policies" / "db.yaml").write_text(POLICY)
    return root


@pytest.fixture
def parsed(monkeypatch: pytest.MonkeyPatch) -> list[str]:
    """The files the cache had to parse, in order."""
    seen: list[str] = []
    real = yamlcache.load_documents

    def counting(text: str, file: str) -> list[yamlcache.YamlDoc]:
        seen.append(file)
        return real(text, file)

    monkeypatch.setattr(yamlcache, "load_documents", counting)
    return seen


def _cold(root: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> object:
    monkeypatch.setenv("MESHCTL_CACHE_DIR", str(tmp_path / "cold-cache"))
    try:
        return load_desired(root)
    finally:
        monkeypatch.setenv("MESHCTL_CACHE_DIR", str(tmp_path / "cache"))


def test_warm_load_parses_nothing_and_equals_the_cold_one(repo: Path, parsed: list[str]) -> None:
    first = load_desired(repo)
    assert sorted(parsed) == ["inventory/namespaces.yaml", "inventory/pods.yaml", "policies/db.yaml"]
    parsed.clear()
    second = load_desired(repo)
    assert parsed == []
    assert second == first
    assert second.lines == first.lines  # field lines too: errors and rule origins name them
    assert second.pod("other/db").source.line == 9  # type: ignore[union-attr]


def test_an_edit_reparses_that_file_only(
    repo: Path, parsed: list[str], tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    load_desired(repo)
    parsed.clear()
    (repo / "policies" / "db.yaml").write_text(POLICY.replace('"5432"', '"5433"'))
    warm = load_desired(repo)
    assert parsed == ["policies/db.yaml"]
    assert warm == _cold(repo, tmp_path, monkeypatch)
    assert "5433" in repr(warm.policies[0])
    entries = marshal.loads(open_cache(repo).path.read_bytes())["entries"]  # type: ignore[union-attr]
    assert sorted(f for f, _ in entries.values()) == [  # one version per file: the cache does not grow
        "inventory/namespaces.yaml", "inventory/pods.yaml", "policies/db.yaml"]


def test_cross_document_errors_name_lines_of_cached_files(
    repo: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """pods.yaml comes from the cache; its line for metadata.namespace must still be right."""
    load_desired(repo)
    (repo / "inventory" / "namespaces.yaml").write_text(NAMESPACES.split("---")[0])
    with pytest.raises(SourceError) as warm:
        load_desired(repo)
    assert "inventory/pods.yaml:13" in str(warm.value)
    with pytest.raises(SourceError) as cold:
        _cold(repo, tmp_path, monkeypatch)
    assert str(warm.value) == str(cold.value)


def test_a_failed_load_leaves_the_cache_as_it_was(repo: Path, parsed: list[str]) -> None:
    load_desired(repo)
    before = open_cache(repo).path.read_bytes()  # type: ignore[union-attr]
    (repo / "policies" / "db.yaml").write_text(POLICY + "  bogus: 1\n")
    with pytest.raises(SourceError):
        load_desired(repo)
    assert open_cache(repo).path.read_bytes() == before  # type: ignore[union-attr]


def test_values_marshal_cannot_hold_are_parsed_every_time(repo: Path, parsed: list[str]) -> None:
    cache = open_cache(repo)
    text = "a: 2001-12-14t21:59:43.10-05:00\n"  # a YAML timestamp: a datetime
    first = cache.documents(text, "x.yaml")
    assert cache.documents(text, "x.yaml") == first
    assert parsed == ["x.yaml", "x.yaml"]
    assert cache.learned == 0


@pytest.mark.parametrize("content", [b"\x00garbage", marshal.dumps({"format": "other", "entries": {}}),
                                     marshal.dumps([1, 2, 3])])
def test_a_foreign_or_broken_cache_file_is_an_empty_cache(
    repo: Path, parsed: list[str], content: bytes
) -> None:
    path = open_cache(repo).path
    assert path is not None
    path.parent.mkdir(parents=True)
    path.write_bytes(content)
    first = load_desired(repo)
    assert len(parsed) == 3
    parsed.clear()
    assert load_desired(repo) == first and parsed == []  # rewritten, then used
