"""The real CLI on many nodes: `meshctl plan` and `meshctl apply` of a one-policy change on a lab
of 20 nodes and 20,000 pods, with batches of 5 and verification by real connections.

compile_bench's synthetic cluster is written as a git repository (plan_cli_bench's layout, the
same pods-as-devices: veth pairs with /32 routes in their node netns, the datapath attached to
every one). Verification needs pods that can open connections, so each node also gets two real
pod netns in namespace `probe`, a client and a server, with the repo's checks between them
(client -> server 8080 allowed, server -> client denied). The first commit is applied in-process
(apply minus verification: 40,000 program attachments take minutes of RCU grace periods in the
kernel). The measured change edits the probe policy so that every node's server endpoint gets a
new policy map: then `meshctl plan --out` and `meshctl apply PLAN` run as commands, each timed
from start to exit with its peak resident memory (RUSAGE_CHILDREN of a small wrapper). Goals:
plan <= 5 s, apply <= 60 s, memory <= 2 GiB.

Run as root: .venv/bin/python bench/apply_scale_bench.py [--pods N --policies N --namespaces N --nodes N]
"""

from __future__ import annotations

import argparse
import os
import subprocess
import sys
import tempfile
import time
from ipaddress import IPv4Network
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))

from compile_bench import add_size_args, write_repo
from plan_cli_bench import MESHCTL, PHASES, commit_repo, git_run, lab_input, lab_with_devices, phases, seed

from meshctl.lab import cluster, registry
from meshctl.lab.topology import LabNode, LabPod, Topology
from meshctl.observe import observe_node

CLUSTER = "ap-apply-scale"
GOALS = {"plan": 5.0, "apply": 60.0}
MEMORY_GOAL_GIB = 2.0

PROBE_POLICIES = """\
apiVersion: cilium.io/v2
kind: CiliumNetworkPolicy
metadata: {{name: probe-server-in, namespace: probe}}
spec:
  endpointSelector: {{matchLabels: {{app: probe-server}}}}
  ingress:
    - fromEndpoints: [{{matchLabels: {{app: probe-client}}}}]
      toPorts: [{{ports: [{ports}]}}]
---
apiVersion: networking.k8s.io/v1
kind: NetworkPolicy
metadata: {{name: probe-client-isolated, namespace: probe}}
spec:
  podSelector: {{matchLabels: {{app: probe-client}}}}
  policyTypes: [Ingress]
"""
PORT_8080 = '{port: "8080", protocol: TCP}'
PORT_9090 = '{port: "9090", protocol: TCP}'


def _probe_files(root: Path, nodes: tuple[str, ...]) -> None:
    docs = ["apiVersion: v1\nkind: Namespace\nmetadata: {name: probe}\n"]
    checks = []
    for i, node in enumerate(nodes):
        for role in ("client", "server"):
            docs.append(
                f"apiVersion: v1\nkind: Pod\nmetadata: {{name: {role}-{i}, namespace: probe, "
                f"labels: {{app: probe-{role}}}}}\nspec:\n  nodeName: {node}\n  containers: "
                f"[{{name: c, image: example/app:1, ports: [{{containerPort: 8080}}]}}]\n")
        for name, src, dst, expect in ((f"allowed-{i}", "client", "server", "allowed"),
                                       (f"denied-{i}", "server", "client", "denied")):
            checks.append(
                f"apiVersion: meshctl.io/v1alpha1\nkind: ConnectivityCheck\nmetadata: {{name: {name}}}\n"
                f"spec: {{from: probe/{src}-{i}, to: probe/{dst}-{i}, port: 8080, expect: {expect}}}\n")
    (root / "inventory" / "probe.yaml").write_text("---\n".join(docs))
    (root / "checks").mkdir(exist_ok=True)
    (root / "checks" / "probe.yaml").write_text("---\n".join(checks))
    (root / "policies" / "probe.yaml").write_text(PROBE_POLICIES.format(ports=PORT_8080))


# Runs the command and prints its peak RSS (KiB) last on stderr. The command is the wrapper's child,
# not this process's: a child forked from this big process would inherit its high-water mark.
PEAK = ("import resource, subprocess, sys; code = subprocess.call(sys.argv[1:]); "
        "print(resource.getrusage(resource.RUSAGE_CHILDREN).ru_maxrss, file=sys.stderr); sys.exit(code)")


def _run(root: Path, *args: str) -> tuple[float, float, str, str, int]:
    """Seconds, peak resident GiB, stdout, stderr and exit code of one meshctl command."""
    t = time.perf_counter()
    res = subprocess.run([sys.executable, "-c", PEAK, str(MESHCTL), "-C", str(root), *args],
                         capture_output=True, text=True)
    seconds = time.perf_counter() - t
    err, _, peak = res.stderr.rstrip("\n").rpartition("\n")
    return seconds, int(peak) / (1 << 20), res.stdout, err, res.returncode


def _observe_all(nodes: tuple[str, ...]) -> None:
    """Observe every node once, as apply's verification does after it reconciles: that is what
    teaches the policy map cache the new maps (the in-process seed has no verification)."""
    reg = registry.require(CLUSTER)
    for node in nodes:
        observe_node(CLUSTER, node, reg.nodes[node].netns)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__)
    add_size_args(ap)
    ap.set_defaults(pods=20_000, policies=2_000, namespaces=1_000, nodes=20)
    args = ap.parse_args()

    nodes, cidrs, spec, pods = lab_input(args, CLUSTER)
    probes = tuple(  # above the device pods' addresses: x.y.250.10 and .11
        LabPod(f"probe/{role}-{i}", node, tcp_ports=(8080,),
               pod_ip=cidrs[node].network_address + (250 << 8) + k)
        for i, node in enumerate(nodes)
        for k, role in ((10, "client"), (11, "server"))
    )

    with tempfile.TemporaryDirectory(prefix="meshctl-apply-scale-") as tmp:
        root = Path(tmp) / "repo"
        os.environ["MESHCTL_CACHE_DIR"] = str(Path(tmp) / "cache")
        write_repo(spec, root, {n: str(c) for n, c in cidrs.items()})
        toml = root / "meshctl.toml"
        toml.write_text(toml.read_text().replace("batchSize = 3", "batchSize = 5"))
        _probe_files(root, nodes)
        commit_repo(root)
        topo = Topology(CLUSTER, IPv4Network("172.31.240.0/24"), tuple(LabNode(n, cidrs[n]) for n in nodes),
                        pods=probes)
        try:
            lab_s = lab_with_devices(topo, pods)
            seed_s = seed(root, CLUSTER)
            _observe_all(nodes)
            noop_s, _gib, _out, noop_err, code = _run(root, "plan", "--detailed-exitcode")  # the baseline
            if code != 0:
                raise SystemExit(f"the first plan should find nothing to do:\n{noop_err[-3000:]}")
            policy = root / "policies" / "probe.yaml"
            policy.write_text(PROBE_POLICIES.format(ports=f"{PORT_8080}, {PORT_9090}"))
            git_run(root, "commit", "-qam", "probe servers also take 9090")
            plan_file = str(Path(tmp) / "plan.json")
            plan_s, plan_gib, plan_out, plan_err, code = _run(root, "plan", "--out", plan_file)
            if code != 0 or "Planned incrementally" not in plan_err:
                raise SystemExit(f"the incremental plan failed:\n{plan_err[-3000:]}")
            full_s, full_gib, _out, full_err, code = _run(root, "plan", "--full")
            if code != 0:
                raise SystemExit(f"the full plan failed:\n{full_err[-3000:]}")
            again = str(Path(tmp) / "p2.json")
            plan_phases = phases(root, Path(tmp) / "plan.prof", "plan", "--full", "--out", again)
            apply_s, apply_gib, apply_out, apply_err, code = _run(root, "apply", plan_file)
        finally:
            cluster.down(CLUSTER, nodes)

    summary = next((ln for ln in plan_out.splitlines() if ln.startswith("Plan:")), "?")
    print(f"input: {args.pods} pods, {args.policies} policies, {args.namespaces} namespaces, "
          f"{len(nodes)} lab nodes, 2 probe pods per node (lab built in {lab_s:.1f} s; first commit "
          f"reconciled in-process in {seed_s:.1f} s)")
    print(f"meshctl plan, full, nothing to do (records the baseline): {noop_s:.2f} s")
    print(f"meshctl plan (probe policy edited), incremental: {plan_s:.2f} s "
          f"({plan_s / GOALS['plan']:.2f}x of the {GOALS['plan']:.0f} s goal), peak {plan_gib:.2f} GiB; "
          f"{summary}")
    print(f"meshctl plan --full of the same edit: {full_s:.2f} s, peak {full_gib:.2f} GiB "
          f"(incremental {full_s / plan_s:.1f}x faster)")
    print(f"meshctl apply, batches of 5 with verification: {apply_s:.2f} s "
          f"({apply_s / GOALS['apply']:.2f}x of the {GOALS['apply']:.0f} s goal), peak {apply_gib:.2f} GiB, "
          f"exit {code}")
    print(f"apply / plan: {apply_s / plan_s:.1f}x; memory goal {MEMORY_GOAL_GIB:.0f} GiB")
    print("full plan phases (cumulative seconds under cProfile, which slows Python code):")
    for label in PHASES.values():
        if label in plan_phases:
            print(f"  {label:<12} {plan_phases[label]:.2f} s")
    tail = [ln for ln in apply_out.splitlines() if ln.strip()][-6:]
    print("apply said (last lines):\n  " + "\n  ".join(tail))
    if code != 0:
        print(apply_err[-3000:], file=sys.stderr)
        raise SystemExit(1)


if __name__ == "__main__":
    main()
