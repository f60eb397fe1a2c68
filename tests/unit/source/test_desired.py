"""load_desired: directories, git revisions without checkout, cross-document checks, examples."""

from __future__ import annotations

from ipaddress import IPv4Address
from pathlib import Path

import git
import pytest

from meshctl.errors import ConfigError, SourceError
from meshctl.model import CiliumNetworkPolicy
from meshctl.source import load_desired

EXAMPLES = Path(__file__).resolve().parents[3] / "examples"

CONFIG = """
[cluster]
name = "t"
[[nodes]]
name = "node-1"
podCIDR = "10.9.1.0/24"
[[nodes]]
name = "node-2"
podCIDR = "10.9.2.0/24"
"""

INVENTORY = """
apiVersion: v1
kind: Namespace
metadata: {name: demo, labels: {team: a}}
---
apiVersion: v1
kind: Pod
metadata: {name: web, namespace: demo, labels: {app: web}}
spec:
  nodeName: node-1
  containers:
    - name: c
      image: nginx
      resources: {limits: {cpu: "1"}}
      ports: [{name: http, containerPort: 80, hostPort: 8080}]
status: {podIP: 10.9.1.5, phase: Running}
---
apiVersion: v1
kind: Pod
metadata: {name: db, namespace: demo, labels: {app: db}}
spec: {nodeName: node-2, restartPolicy: Always}
"""

POLICY = """
apiVersion: cilium.io/v2
kind: CiliumNetworkPolicy
metadata: {name: db-in, namespace: demo}
spec:
  endpointSelector: {matchLabels: {app: db}}
  ingress:
    - fromEndpoints: [{matchLabels: {app: web}}]
      toPorts: [{ports: [{port: "5432", protocol: TCP}]}]
"""

CHECK = """
apiVersion: meshctl.io/v1alpha1
kind: ConnectivityCheck
metadata: {name: web-db}
spec: {from: demo/web, to: demo/db, port: 5432, expect: allowed}
"""


def write_repo(root: Path, files: dict[str, str]) -> Path:
    for rel, text in files.items():
        path = root / rel
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text(text)
    return root


def base_files() -> dict[str, str]:
    return {
        "meshctl.toml": CONFIG,
        "inventory.yaml": INVENTORY,
        "policies/db.yml": POLICY,
        "checks/c.yaml": CHECK,
    }


def test_directory_load(tmp_path: Path) -> None:
    root = write_repo(
        tmp_path / "repo",
        {**base_files(), ".github/workflows/ci.yml": "on: push\n", "README.md": "# not yaml\n"},
    )
    desired = load_desired(root)
    assert desired.root == root.resolve()
    assert desired.commit is None and desired.dirty is False
    assert [n.name for n in desired.namespaces] == ["demo"]
    assert desired.namespaces[0].labels == {"team": "a"}
    web, db = desired.pods
    assert (web.key, web.node_name, web.pod_ip, web.labels) == (
        "demo/web",
        "node-1",
        IPv4Address("10.9.1.5"),
        {"app": "web"},
    )
    assert [(p.name, p.container_port, p.protocol) for p in web.ports] == [("http", 80, "TCP")]
    assert db.pod_ip is None and db.ports == ()
    (policy,) = desired.policies
    assert isinstance(policy, CiliumNetworkPolicy)
    assert (policy.source.file, policy.source.line) == ("policies/db.yml", 2)
    assert web.source.file == "inventory.yaml" and web.source.line == 6
    (check,) = desired.checks
    assert (check.name, check.from_, check.to, check.port, check.protocol, check.expect) == (
        "web-db",
        "demo/web",
        "demo/db",
        5432,
        "TCP",
        "allowed",
    )
    assert desired.pod("demo/db") == db and desired.namespace("demo") is not None


def test_with_pod_ips_fills_only_missing(tmp_path: Path) -> None:
    desired = load_desired(write_repo(tmp_path, base_files()))
    filled = desired.with_pod_ips({"demo/db": IPv4Address("10.9.2.7"), "demo/web": IPv4Address("10.9.1.99")})
    assert filled.pod("demo/db").pod_ip == IPv4Address("10.9.2.7")  # type: ignore[union-attr]
    assert filled.pod("demo/web").pod_ip == IPv4Address("10.9.1.5")  # type: ignore[union-attr]
    assert desired.pod("demo/db").pod_ip is None  # type: ignore[union-attr]


def test_git_revision_is_read_without_checkout(tmp_path: Path) -> None:
    root = write_repo(tmp_path / "repo", base_files())
    repo = git.Repo.init(root)
    with repo.config_writer() as cw:
        cw.set_value("user", "name", "t").set_value("user", "email", "t@example.com")
    repo.index.add(["meshctl.toml", "inventory.yaml", "policies/db.yml", "checks/c.yaml"])
    first = repo.index.commit("first").hexsha
    (root / "policies/db.yml").write_text(POLICY.replace("db-in", "db-in-v2"))
    repo.index.add(["policies/db.yml"])
    second = repo.index.commit("second").hexsha
    (root / "policies/db.yml").write_text("garbage: [")  # working tree broken, commits fine

    old = load_desired(root, first)
    assert old.commit == first and old.dirty is False
    assert [p.metadata.name for p in old.policies] == ["db-in"]
    new = load_desired(root, "HEAD")
    assert new.commit == second
    assert [p.metadata.name for p in new.policies] == ["db-in-v2"]
    assert (root / "policies/db.yml").read_text() == "garbage: ["  # nothing was checked out

    with pytest.raises(SourceError, match=r"policies/db\.yml:1: invalid YAML"):
        load_desired(root)
    (root / "policies/db.yml").write_text(POLICY.replace("db-in", "db-in-v2"))
    clean = load_desired(root)
    assert clean.commit == second and clean.dirty is False
    (root / "extra.yaml").write_text(CHECK.replace("web-db", "web-db-2"))
    assert load_desired(root).dirty is True
    with pytest.raises(SourceError, match="unknown git revision 'nope'"):
        load_desired(root, "nope")


def test_git_subdirectory_root(tmp_path: Path) -> None:
    top = tmp_path / "mono"
    write_repo(top / "clusters/prod", base_files())
    repo = git.Repo.init(top)
    with repo.config_writer() as cw:
        cw.set_value("user", "name", "t").set_value("user", "email", "t@example.com")
    repo.git.add(A=True)
    sha = repo.index.commit("c").hexsha
    desired = load_desired(top / "clusters/prod", sha)
    assert desired.commit == sha and len(desired.pods) == 2
    assert desired.policies[0].source.file == "policies/db.yml"


def test_not_a_git_repo(tmp_path: Path) -> None:
    write_repo(tmp_path, base_files())
    with pytest.raises(SourceError, match="not in a git repository"):
        load_desired(tmp_path, "HEAD")


@pytest.mark.parametrize(
    ("change", "expected"),
    [
        (
            {"z.yaml": POLICY},
            "z.yaml:4: metadata.name: duplicate CiliumNetworkPolicy demo/db-in "
            "(first defined at policies/db.yml:2)",
        ),
        (
            {"inventory.yaml": INVENTORY.replace("nodeName: node-2", "nodeName: node-7")},
            "inventory.yaml:21: spec.nodeName: unknown node 'node-7'; nodes are node-1, node-2",
        ),
        (
            {"inventory.yaml": INVENTORY.replace("namespace: demo, labels: {app: db}", "namespace: other")},
            "inventory.yaml:20: metadata.namespace: namespace 'other' is not declared",
        ),
        (
            {"inventory.yaml": INVENTORY.replace("10.9.1.5", "10.9.2.5")},
            "inventory.yaml:16: status.podIP: 10.9.2.5 is outside podCIDR 10.9.1.0/24 of node node-1",
        ),
        (
            {"checks/c.yaml": CHECK.replace("demo/db", "demo/nope")},
            "checks/c.yaml:5: spec.to: no pod demo/nope is declared",
        ),
        (
            {"meshctl.toml": CONFIG.replace("[cluster]", "[clusters]")},
            "meshctl.toml:2: clusters: unknown field",
        ),
    ],
)
def test_cross_document_errors(tmp_path: Path, change: dict[str, str], expected: str) -> None:
    root = write_repo(tmp_path, {**base_files(), **change})
    with pytest.raises(SourceError) as info:
        load_desired(root)
    assert str(info.value).startswith(expected), str(info.value)


def test_missing_config_and_directory(tmp_path: Path) -> None:
    with pytest.raises(SourceError, match=r"meshctl\.toml: missing"):
        load_desired(write_repo(tmp_path, {"a.yaml": CHECK}))
    with pytest.raises(SourceError, match="not found"):
        load_desired(tmp_path / "absent")
    with pytest.raises(ConfigError):
        load_desired(write_repo(tmp_path / "b", {"meshctl.toml": "[cluster]\n"}))


def test_three_tier_example() -> None:
    desired = load_desired(EXAMPLES / "three-tier")
    cfg = desired.config
    assert cfg.cluster == "three-tier"
    assert [(n.name, str(n.pod_cidr)) for n in cfg.nodes] == [
        ("node-1", "10.101.1.0/24"),
        ("node-2", "10.101.2.0/24"),
        ("node-3", "10.101.3.0/24"),
    ]
    pods = {p.key: p for p in desired.pods}
    assert {
        k: (p.labels, p.node_name, [(q.name, q.container_port, q.protocol) for q in p.ports])
        for k, p in pods.items()
    } == {
        "demo/frontend": ({"app": "frontend", "tier": "web"}, "node-1", [("http", 80, "TCP")]),
        "demo/api": ({"app": "api", "tier": "backend"}, "node-2", [("api", 3000, "TCP")]),
        "demo/database": ({"app": "database", "tier": "data"}, "node-3", [("postgres", 5432, "TCP")]),
        "kube-system/kube-dns": (
            {"k8s-app": "kube-dns"},
            "node-1",
            [("dns", 53, "UDP"), ("dns-tcp", 53, "TCP")],
        ),
    }
    policies = {p.metadata.name: p for p in desired.policies}
    deny = policies["default-deny"]
    assert isinstance(deny, CiliumNetworkPolicy)
    rule = deny.rules[0]
    assert rule.endpoint_selector is not None and rule.endpoint_selector.is_empty
    assert rule.ingress is not None and len(rule.ingress) == 1  # `ingress: [{}]`, the form that isolates
    assert rule.egress is not None and len(rule.egress) == 1
    dns = policies["allow-dns"].rules[0].egress[0]  # type: ignore[union-attr,index]
    assert dns.to_endpoints[0].match_labels == {  # type: ignore[index]
        "k8s:io.kubernetes.pod.namespace": "kube-system",
        "k8s:k8s-app": "kube-dns",
    }
    assert [(p.port, p.protocol) for p in dns.to_ports[0].ports] == [(53, "UDP"), (53, "TCP")]  # type: ignore[index,union-attr]
    assert {(c.from_, c.to, c.port, c.expect) for c in desired.checks} == {
        ("demo/frontend", "demo/api", 3000, "allowed"),
        ("demo/api", "demo/database", 5432, "allowed"),
        ("demo/frontend", "demo/database", 5432, "denied"),
    }


def test_production_example_and_its_change(tmp_path: Path) -> None:
    desired = load_desired(EXAMPLES / "production")
    assert desired.namespace("production").labels == {"environment": "production"}  # type: ignore[union-attr]
    assert {p.key for p in desired.pods} == {"production/postgres", "production/backend", "production/cache"}
    assert len({p.node_name for p in desired.pods}) >= 2
    assert "database-security" not in {p.metadata.name for p in desired.policies}
    # Copying the change into the repo loads it as one more policy.
    import shutil

    shutil.copytree(EXAMPLES / "production", tmp_path / "prod",
                    ignore=shutil.ignore_patterns("state", "plans"))
    shutil.copy(EXAMPLES / "production-changes/database-security.yaml", tmp_path / "prod/policies/")
    changed = load_desired(tmp_path / "prod")
    new = next(p for p in changed.policies if p.metadata.name == "database-security")
    peers = new.rules[0].ingress[0].from_endpoints  # type: ignore[union-attr,index]
    assert peers[0].match_labels == {"app": "backend", "environment": "production"}  # type: ignore[index]
