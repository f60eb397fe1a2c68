"""Hand-made map entries and other programs on meshctl's interfaces, through the real CLI.

The old decoder read a prefix-32 policy key (one identity, both directions, any protocol) as
the compiled prefix-40 entry of the same identity, so plan, drift and status all said nothing
while the kernel held a wider allow. Now each of them names it, and apply removes it. A program
meshctl did not attach is reported by plan, drift and status and left in place.
"""

from __future__ import annotations

import struct
import subprocess
from collections.abc import Iterator
from pathlib import Path

import pytest
from apply_helpers import connect, lab_of, meshctl, three_tier_copy, unique_cluster
from bd_helpers import compile_fixture

from meshctl.dataplane.libbpf import BPF_TCX_INGRESS, BpfObject, Link, Map
from meshctl.dataplane.netns import ifindex, in_netns

pytestmark = [pytest.mark.privileged, pytest.mark.lab]

CLUSTER = unique_cluster("t-ap-foreign")
L3_ALLOW = """\
apiVersion: cilium.io/v2
kind: CiliumNetworkPolicy
metadata:
  name: api-from-frontend-l3
  namespace: demo
spec:
  endpointSelector:
    matchLabels: {app: api}
  ingress:
    - fromEndpoints:
        - matchLabels: {app: frontend}
"""


@pytest.fixture(scope="module")
def repo(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Path]:
    root = three_tier_copy(tmp_path_factory.mktemp("foreign") / "repo", CLUSTER)
    (root / "policies" / "api-l3.yaml").write_text(L3_ALLOW)
    with lab_of(root):
        res = meshctl(root, "apply", "--auto-approve")
        assert res.returncode == 0, res.stdout + res.stderr
        yield root


def _api_inner_map() -> tuple[Map, int]:
    """demo/api's inner policy map on node-2 and demo/frontend's identity."""
    from meshctl.lab import registry

    api, frontend = registry.pod(CLUSTER, "demo/api"), registry.pod(CLUSTER, "demo/frontend")
    pins = Path("/sys/fs/bpf/meshctl") / CLUSTER / api.node
    def u32(name: str, key: bytes) -> int:
        with Map.from_pin(pins / name) as m:
            value = m.lookup(key)
        assert value is not None, f"{name}: no entry {key.hex()}"
        return int(struct.unpack("<I", value[:4])[0])

    endpoint_id = u32("endpoints", api.address.packed)
    identity = u32("ipcache", struct.pack("<I", 32) + frontend.address.packed)
    return Map.from_id(u32("policy_maps", struct.pack("<I", endpoint_id))), identity


def test_prefix_32_allow_beside_the_compiled_prefix_40_is_reported_and_removed(repo: Path) -> None:
    inner, frontend = _api_inner_map()
    with inner:
        compiled = [k for k, _ in inner.items() if struct.unpack("<II", k[:8]) == (40, frontend)]
        assert compiled, "the L3 rule compiles to a prefix-40 entry for demo/frontend"
        hand = struct.pack("<IIBBH", 32, frontend, 0, 0, 0)
        inner.update(hand, struct.pack("<IB3x", 0xBEEF, 0))

    plan = meshctl(repo, "plan", "--detailed-exitcode")
    assert plan.returncode == 2, plan.stdout + plan.stderr
    assert "Hand-made entry in the policy map of demo/api on node-2" in plan.stdout
    assert "allows demo/frontend" in plan.stdout
    assert "in both directions, every protocol and port" in plan.stdout
    assert "hand-made policymap demo/api entry" in plan.stdout

    drift = meshctl(repo, "drift", "--detailed-exitcode")
    assert drift.returncode == 2, drift.stdout + drift.stderr
    assert "hand-made policymap demo/api entry" in drift.stdout
    assert "present on the node but not in the desired state" in drift.stdout

    status = meshctl(repo, "status")
    assert "node-2: 1 object(s)" in status.stdout, status.stdout

    applied = meshctl(repo, "apply", "--auto-approve")
    assert applied.returncode == 0, applied.stdout + applied.stderr
    inner, _ = _api_inner_map()
    with inner:
        keys = [k for k, _ in inner.items()]
    assert hand not in keys and compiled[0] in keys
    assert meshctl(repo, "drift", "--detailed-exitcode").returncode == 0
    assert connect(CLUSTER, "demo/frontend", "demo/api", 3000)


def test_foreign_programs_are_reported_and_left_alone(repo: Path, tmp_path: Path) -> None:
    from meshctl.lab import registry

    api = registry.pod(CLUSTER, "demo/api")
    netns = registry.lab_nodes(CLUSTER)[api.node].netns
    obj = compile_fixture("pass_all", tmp_path)
    with BpfObject.open(obj) as bpf:
        bpf.load()
        prog = bpf.program("pass_all")
        with in_netns(netns):
            link = Link.create(prog.fd, ifindex(api.veth) or 0, BPF_TCX_INGRESS, "a foreign tcx program")
        tc = ["nsenter", f"--net=/run/netns/{netns}", "tc"]
        subprocess.run([*tc, "qdisc", "add", "dev", api.veth, "clsact"], check=True)
        subprocess.run([*tc, "filter", "add", "dev", api.veth, "egress", "bpf", "da", "obj", str(obj),
                        "sec", "tc"], check=True, capture_output=True)
        try:
            plan = meshctl(repo, "plan")
            assert plan.returncode == 0, plan.stderr
            assert f"Foreign program on {api.veth} on node-2" in plan.stdout
            assert "tcx-ingress program pass_all" in plan.stdout and "after meshctl's program" in plan.stdout
            assert "tc-egress program" in plan.stdout
            drift = meshctl(repo, "drift", "--detailed-exitcode")
            assert drift.returncode == 2 and "program(s) meshctl did not attach" in drift.stdout
            assert "foreign program(s)" in meshctl(repo, "status").stdout
            assert meshctl(repo, "apply", "--auto-approve").returncode == 0
            with in_netns(netns):
                from meshctl.dataplane.libbpf import query_tcx

                assert link.info().prog_id in query_tcx(ifindex(api.veth) or 0, BPF_TCX_INGRESS)
        finally:
            link.close()
            subprocess.run([*tc, "qdisc", "del", "dev", api.veth, "clsact"], check=False)
    assert meshctl(repo, "drift", "--detailed-exitcode").returncode == 0
