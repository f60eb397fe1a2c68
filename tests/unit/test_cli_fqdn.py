"""The toFQDNs trap (DNS allowed without `rules.dns`) in validate and trace, and a bad pattern
as one error line with file, line and field."""

from __future__ import annotations

import shutil
import subprocess
import sys
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[2]
MESHCTL = Path(sys.executable).with_name("meshctl")
# The seed's payment-egress policy (on the demo's api pod): DNS to kube-dns, but no `rules.dns`.
PAYMENT_EGRESS = """apiVersion: cilium.io/v2
kind: CiliumNetworkPolicy
metadata:
  name: payment-egress
  namespace: demo
spec:
  endpointSelector:
    matchLabels:
      app: api
  egress:
    - toFQDNs:
        - matchName: api.stripe.com
        - matchPattern: "*.amazonaws.com"
      toPorts:
        - ports:
            - port: "443"
              protocol: TCP
    - toEndpoints:
        - matchLabels:
            k8s:io.kubernetes.pod.namespace: kube-system
            k8s-app: kube-dns
      toPorts:
        - ports:
            - port: "53"
              protocol: UDP
"""
TRAP = ("CiliumNetworkPolicy demo/payment-egress egress[0] (policies/payment-egress.yaml:11): toFQDNs "
        "(*.amazonaws.com, api.stripe.com) will never learn an IP and every connection to these names will "
        "be dropped: CiliumNetworkPolicy demo/payment-egress egress[1] (policies/payment-egress.yaml:18) "
        "allows DNS (port 53) without `rules.dns`")


@pytest.fixture
def repo(tmp_path: Path) -> Path:
    root = tmp_path / "repo"
    shutil.copytree(REPO / "examples" / "three-tier", root, ignore=shutil.ignore_patterns("state"))
    return root


def run(*args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run([str(MESHCTL), *args], capture_output=True, text=True, timeout=60)


def test_validate_and_trace_name_the_trap_and_the_fix(repo: Path) -> None:
    (repo / "policies" / "payment-egress.yaml").write_text(PAYMENT_EGRESS)
    checked = run("validate", "-C", str(repo))
    assert checked.returncode == 0, checked.stderr
    assert TRAP in " ".join(checked.stdout.split())
    assert 'Fix: add `rules: {dns: [{matchPattern: "*"}]}` to the port-53 toPorts' in checked.stdout
    traced = run("policy", "trace", "-C", str(repo), "--from", "demo/api", "--to", "203.0.113.10",
                 "--port", "443")
    assert traced.returncode == 0, traced.stderr
    assert "DROPPED" in traced.stdout.splitlines()[0] and TRAP in " ".join(traced.stdout.split())

    fixed = PAYMENT_EGRESS.replace('protocol: UDP\n', 'protocol: UDP\n          rules:\n            dns:\n'
                                   '              - matchPattern: "*"\n')
    (repo / "policies" / "payment-egress.yaml").write_text(fixed)
    checked = run("validate", "-C", str(repo))
    assert checked.returncode == 0 and "toFQDNs" not in checked.stdout + checked.stderr


def test_a_pattern_cilium_refuses_is_one_line_with_file_line_and_field(repo: Path) -> None:
    bad = PAYMENT_EGRESS.replace("*.amazonaws", "a.**.amazonaws")
    (repo / "policies" / "payment-egress.yaml").write_text(bad)
    checked = run("validate", "-C", str(repo))
    assert checked.returncode == 1 and "Traceback" not in checked.stderr
    assert ("policies/payment-egress.yaml:13: spec.egress[0].toFQDNs[1].matchPattern: 'a.**.amazonaws.com': "
            "'**' is allowed only as a leading '**.'") in checked.stdout + checked.stderr
