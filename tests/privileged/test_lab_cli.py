"""`meshctl lab up/status/down -C REPO` on tiny desired repos: the real CLI, real netns."""

from __future__ import annotations

import os
import subprocess
import sys
import textwrap
from pathlib import Path

import pytest
from lab_helpers import unique

from meshctl.lab import cluster, names, registry
from meshctl.lab.netns import list_netns

pytestmark = pytest.mark.privileged

CONFIG = """\
[cluster]
name = "{name}"

[[nodes]]
name = "n1"
podCIDR = "10.220.1.0/24"

[[nodes]]
name = "n2"
podCIDR = "{cidr2}"

[lab]
underlayCIDR = "172.31.252.0/24"
"""

PODS = """\
apiVersion: v1
kind: Namespace
metadata:
  name: shop
---
apiVersion: v1
kind: Pod
metadata:
  name: web
  namespace: shop
  labels: {{app: web}}
spec:
  nodeName: n1
  containers:
    - name: web
      image: nginx
      ports:
        - containerPort: 8080
---
apiVersion: v1
kind: Pod
metadata:
  name: db
  namespace: shop
  labels: {{app: db}}
spec:
  nodeName: {db_node}
  containers:
    - name: db
      ports:
        - containerPort: 5432
        - containerPort: 5353
          protocol: UDP
status:
  podIP: 10.220.2.50
"""


def make_repo(tmp: Path, name: str, cidr2: str = "10.220.2.0/24", db_node: str = "n2") -> Path:
    (tmp / "meshctl.toml").write_text(CONFIG.format(name=name, cidr2=cidr2))
    (tmp / "inventory").mkdir()
    (tmp / "inventory" / "pods.yaml").write_text(textwrap.dedent(PODS.format(db_node=db_node)))
    return tmp


def meshctl(*args: str) -> subprocess.CompletedProcess[str]:
    exe = os.path.join(os.path.dirname(sys.executable), "meshctl")
    return subprocess.run([exe, *args], capture_output=True, text=True, timeout=120)


def test_up_status_exec_down_from_repo(tmp_path: Path) -> None:
    name = unique("t-lab-cli")
    repo = make_repo(tmp_path, name)
    try:
        up = meshctl("lab", "up", "-C", str(repo), "--no-datapath")
        assert up.returncode == 0, up.stderr
        ips = registry.pod_ips(name)
        assert str(ips["shop/db"]) == "10.220.2.50"  # status.podIP is honoured
        assert str(ips["shop/web"]) == "10.220.1.2"  # allocated
        again = meshctl("lab", "up", "-C", str(repo), "--no-datapath")
        assert again.returncode == 0, again.stderr
        assert registry.pod_ips(name) == ips
        status = meshctl("lab", "status", "-C", str(repo))
        assert status.returncode == 0 and "shop/web" in status.stdout and "10.220.2.50" in status.stdout
        # a pod connects to another pod's declared port on the other node, like curl
        cmd = ("import socket; s=socket.create_connection(('10.220.2.50', 5432), 2);"
               " print(s.recv(100).decode().strip())")
        out = meshctl("lab", "exec", "-C", str(repo), "shop/web", "--", sys.executable, "-c", cmd)
        assert out.returncode == 0, out.stderr
        assert out.stdout.strip() == "shop/db:5432"
    finally:
        down = meshctl("lab", "down", "-C", str(repo))
    assert down.returncode == 0, down.stderr
    assert "removed 5 network namespaces" in down.stdout
    assert not [n for n in list_netns() if names.is_lab_netns(name, n, {"n1", "n2"})]
    assert registry.load(name) is None


@pytest.mark.parametrize(("cidr2", "db_node", "message"), [
    ("10.220.2.0/24", "n7", "inventory/pods.yaml:27: spec.nodeName:"),
    ("10.220.0.0/16", "n2", "overlaps"),
    ("172.31.252.0/25", "n2", "overlaps"),
])
def test_bad_topology_is_one_line_error_and_builds_nothing(
        tmp_path: Path, cidr2: str, db_node: str, message: str) -> None:
    name = unique("t-lab-bad")
    repo = make_repo(tmp_path, name, cidr2=cidr2, db_node=db_node)
    try:
        out = meshctl("lab", "up", "-C", str(repo), "--no-datapath")
        assert out.returncode == 1
        assert message in out.stderr
        assert "Traceback" not in out.stderr and len(out.stderr.strip().splitlines()) == 1
        assert not [n for n in list_netns() if n.startswith(names.prefix(name))]
        assert registry.load(name) is None
    finally:
        cluster.down(name)


def test_duplicate_pod_is_rejected(tmp_path: Path) -> None:
    name = unique("t-lab-dup")
    repo = make_repo(tmp_path, name)
    (repo / "inventory" / "more.yaml").write_text(textwrap.dedent("""\
        apiVersion: v1
        kind: Pod
        metadata: {name: web, namespace: shop}
        spec: {nodeName: n2}
        """))
    try:
        out = meshctl("lab", "up", "-C", str(repo), "--no-datapath")
        assert out.returncode == 1
        assert "duplicate Pod shop/web" in out.stderr or "duplicate pod shop/web" in out.stderr
        assert registry.load(name) is None
    finally:
        cluster.down(name)
