"""`meshctl plan` against a live lab: outputs, --node, --ref, exit codes, input errors."""

from __future__ import annotations

import json
import re
import subprocess
from collections.abc import Iterator
from pathlib import Path

import pytest
from apply_helpers import lab_of, meshctl, three_tier_copy, unique_cluster

pytestmark = [pytest.mark.privileged, pytest.mark.lab]

CLUSTER = unique_cluster("t-ap-plan")


@pytest.fixture(scope="module")
def repo(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Path]:
    root = three_tier_copy(tmp_path_factory.mktemp("plan") / "repo", CLUSTER)
    with lab_of(root):
        yield root


def test_json_plan_names_every_node_and_is_saved(repo: Path) -> None:
    out = repo / "plans" / "p.json"
    res = meshctl(repo, "plan", "-o", "json", "--out", str(out), "--detailed-exitcode")
    assert res.returncode == 2, res.stderr
    doc = json.loads(res.stdout)
    assert doc["plan_id"].startswith("sha256:") and doc["format_version"]
    assert [n["node"] for n in doc["nodes"]] == ["node-1", "node-2", "node-3"]
    assert all(n["observed_fingerprint"].startswith("sha256:") for n in doc["nodes"])
    assert doc["summary"]["add"] > 0 and doc["summary"]["destroy"] == 0
    assert json.loads(out.read_text())["plan_id"] == doc["plan_id"]
    show = meshctl(repo, "show", str(out))
    assert show.returncode == 0 and "to add" in show.stdout


def test_markdown_and_node_filter(repo: Path) -> None:
    res = meshctl(repo, "plan", "-o", "markdown", "--node", "node-2")
    assert res.returncode == 0, res.stderr
    assert "node-2" in res.stdout and "node-3" not in res.stdout
    res = meshctl(repo, "plan", "--node", "node-9")
    assert res.returncode == 1 and f"--node node-9: not a node of {CLUSTER}" in res.stderr


def test_ref_plans_a_git_revision(repo: Path) -> None:
    git = ["git", "-C", str(repo), "-c", "user.name=t", "-c", "user.email=t@example.com"]
    subprocess.run([*git, "init", "-q"], check=True)
    subprocess.run([*git, "add", "-A"], check=True)
    subprocess.run([*git, "commit", "-qm", "three-tier"], check=True)
    (repo / "policies" / "default-deny.yaml").unlink()
    subprocess.run([*git, "commit", "-qam", "no default deny"], check=True)
    head = json.loads(meshctl(repo, "plan", "-o", "json").stdout)
    old = json.loads(meshctl(repo, "plan", "-o", "json", "--ref", "HEAD~1").stdout)
    assert old["source"]["commit"] != head["source"]["commit"]

    def frontend_ingress_enforced(plan: dict) -> bool:  # type: ignore[type-arg]
        node1 = next(n for n in plan["nodes"] if n["node"] == "node-1")
        change = next(c for c in node1["resource_changes"] if c["address"] == "node-1 endpoint demo/frontend")
        return bool(change["change"]["after"]["enforce_ingress"])

    # HEAD~1 still has default-deny, which is the only rule isolating frontend's ingress
    assert frontend_ingress_enforced(old) and not frontend_ingress_enforced(head)
    res = meshctl(repo, "plan", "--ref", "no-such-rev")
    assert res.returncode == 1 and "unknown git revision" in res.stderr


def test_bad_input_is_one_line_naming_file_and_line(repo: Path, tmp_path: Path) -> None:
    bad = tmp_path / "bad"
    three_tier_copy(bad, CLUSTER)
    (bad / "policies" / "oops.yaml").write_text(
        "apiVersion: cilium.io/v2\nkind: CiliumNetworkPolicy\nmetadata:\n  name: oops\n  namespace: demo\n"
        "spec:\n  endpointSelector: {}\n  egress:\n    - toEntities: [dns]\n"
    )
    res = meshctl(bad, "plan")
    assert res.returncode == 1
    assert "Traceback" not in res.stderr and len(res.stderr.strip().splitlines()) == 1
    assert "policies/oops.yaml" in res.stderr and "dns" in res.stderr


def test_no_lab_is_a_clear_error(tmp_path: Path) -> None:
    name = unique_cluster("t-ap-nolab")
    repo = three_tier_copy(tmp_path / "nolab", name)
    res = meshctl(repo, "plan")
    assert res.returncode == 1
    assert f"no lab named '{name}' is up" in res.stderr


def test_a_state_that_overflows_a_map_is_refused_naming_map_node_and_setting(tmp_path: Path) -> None:
    wide = three_tier_copy(tmp_path / "wide", CLUSTER)  # the module's lab: same cluster name
    cidrs = "".join(f"        - 10.200.0.{i}/32\n" for i in range(1, 21))  # 20 CIDR identities
    ports = "".join(f"            - port: \"{1001 + 2 * i}\"\n" for i in range(900))  # x 900 odd ports
    (wide / "policies" / "wide.yaml").write_text(
        "apiVersion: cilium.io/v2\nkind: CiliumNetworkPolicy\nmetadata:\n  name: wide\n  namespace: demo\n"
        "spec:\n  endpointSelector:\n    matchLabels:\n      app: api\n  ingress:\n    - fromCIDR:\n"
        f"{cidrs}      toPorts:\n        - ports:\n{ports}"
    )
    out = wide / "plans" / "wide.json"
    res = meshctl(wide, "plan", "--out", str(out))
    assert res.returncode == 1 and "Traceback" not in res.stderr
    assert "the desired state does not fit the BPF maps" in res.stderr
    assert "node node-2: map policy map would overflow: endpoint demo/api" in res.stderr
    needs = re.search(r"needs (\d+) entries, capacity 16384; raise POLICY_MAP_SIZE in bpf/lib/common\.h",
                      res.stderr)
    assert needs and int(needs.group(1)) >= 18000, res.stderr
    assert not out.exists()
