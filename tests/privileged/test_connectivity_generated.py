"""`meshctl connectivity test` in a real lab: generated pod-to-pod (same node, across nodes) and
pod-to-service checks, with expectations from the compiled intent, each confirmed by its own
flow (matched by source port); a repo that no longer matches the datapath turns it red.

One lab for the module: t-fl2-svc, a copy of examples/services (kube-proxy replacement on).
"""

from __future__ import annotations

import json
import re
import shutil
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path

import pytest

pytestmark = [pytest.mark.privileged, pytest.mark.lab]

REPO = Path(__file__).resolve().parents[2]
MESHCTL = str(Path(sys.executable).with_name("meshctl"))
CLUSTER = "t-fl2-svc"


def meshctl(repo: Path, *args: str, timeout: float = 120) -> subprocess.CompletedProcess[str]:
    return subprocess.run([MESHCTL, *args, "-C", str(repo)], capture_output=True, text=True, timeout=timeout)


@pytest.fixture(scope="module")
def repo(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Path]:
    dest = tmp_path_factory.mktemp("conn") / "services"
    shutil.copytree(REPO / "examples" / "services", dest, ignore=shutil.ignore_patterns("state", "plans"))
    toml = dest / "meshctl.toml"
    text = re.sub(r'(?m)^name = "services"', f'name = "{CLUSTER}"', toml.read_text())
    text = re.sub(r"(?m)^verifyWindow = .*$", "verifyWindow = 0.05", text)
    text = text.replace('underlayCIDR = "172.31.249.0/24"', 'underlayCIDR = "172.31.238.0/24"')
    toml.write_text(text + "\n[observability]\nmetricsBasePort = 19860\n")
    try:
        up = meshctl(dest, "lab", "up")
        assert up.returncode == 0, up.stderr
        applied = meshctl(dest, "apply", "--auto-approve")
        assert applied.returncode == 0, applied.stdout + applied.stderr
        yield dest
    finally:
        meshctl(dest, "lab", "down")


def checks(repo: Path, *args: str) -> tuple[int, dict]:  # type: ignore[type-arg]
    out = meshctl(repo, "connectivity", "test", "-o", "json", *args)
    assert out.stdout, out.stderr
    return out.returncode, json.loads(out.stdout)


def test_generated_checks_pass_and_each_has_its_own_flow(repo: Path) -> None:
    rc, data = checks(repo)
    failed = [c for c in data["checks"] if not c["passed"]]
    assert rc == 0 and not failed, failed
    kinds = {c["kind"] for c in data["checks"]}
    assert kinds == {"check", "pod-to-pod", "pod-to-service"}
    gen = [c for c in data["checks"] if c["kind"] == "pod-to-pod"]
    # three nodes: one check per node pair, plus node-1 (client and api-1) locally
    assert sorted(c["locality"] for c in gen) == ["cross node"] * 3 + ["same node"]
    assert {c["expect"] for c in gen} == {"allowed", "denied"}  # the policies decide both ways
    for c in data["checks"]:
        flow = c["flow"]
        assert flow["verdict"] == ("FORWARDED" if c["connected"] else "DROPPED")
        assert flow["src_pod"] == c["src"]
    ports = [c["flow"]["src_port"] for c in data["checks"]]
    assert len(set(ports)) == len(ports)  # never two checks confirmed by one flow
    svc = next(c for c in data["checks"] if c["name"] == "demo/api:http")
    assert svc["dst_ip"] == "10.96.0.10" and svc["flow"]["dst_pod"].startswith("demo/api-")
    assert svc["flow"]["dst_port"] == 3000  # the backend's port: translated before policy

    text = meshctl(repo, "connectivity", "test")
    assert text.returncode == 0
    assert re.search(r"(?m)^PASS\s+pod-to-service\s+demo/api:http\s", text.stdout)
    assert re.search(r"\d+/\d+ checks passed, 0 failed", text.stdout)


def test_intent_that_the_datapath_does_not_enforce_fails(repo: Path) -> None:
    """Delete the api's ingress policy from the repo without applying: the intent now allows
    api-1 -> api-2, the datapath still drops it; the generated check says so (exit 1)."""
    policy = repo / "policies" / "api.yaml"
    saved = policy.read_text()
    docs = saved.split("\n---\n")
    policy.write_text("\n---\n".join(d for d in docs if "name: api-ingress" not in d))
    try:
        rc, data = checks(repo, "--no-flows")
        assert rc == 1
        bad = {c["name"]: c for c in data["checks"] if not c["passed"]}
        assert "node-1->node-2" in bad
        assert bad["node-1->node-2"]["expect"] == "allowed" and not bad["node-1->node-2"]["connected"]
    finally:
        policy.write_text(saved)


def test_bad_flags_are_one_line_errors(repo: Path) -> None:
    out = meshctl(repo, "connectivity", "test", "--check", "no-such-check")
    assert out.returncode == 1 and "Traceback" not in out.stderr
    assert out.stderr.strip().splitlines() == [
        "Error: --check no-such-check: no such ConnectivityCheck in the repo"]
    out = meshctl(repo, "connectivity", "test", "-o", "yaml")
    assert out.returncode == 1 and "'yaml' is not one of 'text', 'json'" in out.stderr
