"""The real CLI at scale: `meshctl plan` of a 10,000-pod repo on a lab, start to exit.

compile_bench's synthetic cluster is written as a git repository (YAML inventory, one file per
policy); its first commit is applied and planned once (a full plan with nothing to do: it leaves
the baseline of incremental plans). The next commit, which removes one CiliumNetworkPolicy, is
planned by the `meshctl` command against a lab of real node netns with the datapath loaded, both
incrementally (the default after such a baseline) and with --full; the two plans must be equal.
Pods are devices with /32 routes in their node's netns (10,000 pod netns would measure the
lab, not meshctl): veth pairs with both ends in the node netns (this kernel has no dummy
driver), which the apply attaches the programs to. The plan runs once more under cProfile to
split its time by phase.

Run as root: .venv/bin/python bench/plan_cli_bench.py [--pods N --policies N --namespaces N --nodes N]
"""

from __future__ import annotations

import argparse
import json
import os
import pstats
import statistics
import subprocess
import sys
import tempfile
import time
from ipaddress import IPv4Address, IPv4Network
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))

from compile_bench import add_size_args, synthetic, write_repo

from meshctl.compile.spec import ClusterSpec
from meshctl.lab import cluster, registry
from meshctl.lab.names import pod_netns, pod_veth
from meshctl.lab.topology import LabNode, Topology

CLUSTER = "ap-cli-bench"
MESHCTL = Path(sys.executable).with_name("meshctl")
REPEATS = 5  # runs of the incremental plan (the first is the one compared with --full)
PHASES = {  # function (file suffix, name) -> phase label, in pipeline order
    ("source/desired.py", "load_desired"): "load repo",
    ("state/store.py", "load_state"): "load state",
    ("state/tables.py", "compile_desired"): "compile",
    ("backend/lab.py", "observe_many"): "observe",
    ("plan/build.py", "build_plan"): "diff",
    ("plan/planfile.py", "write_plan"): "write plan",
    ("state/store.py", "save_state"): "save state",
}


def git_run(root: Path, *args: str) -> None:
    subprocess.run(["git", "-C", str(root), "-c", "user.name=bench", "-c", "user.email=bench@example.invalid",
                    *args], check=True, capture_output=True)


def pods_as_devices(cluster: str, spec_pods: list[tuple[str, str, IPv4Address]]) -> None:
    """Each pod: a veth pair (named like the lab's) with a /32 route, both ends in its node netns."""
    reg = registry.require(cluster)
    batches: dict[str, list[str]] = {}
    for key, node, ip in spec_pods:
        dev = pod_veth(key)
        batches.setdefault(reg.nodes[node].netns, []).extend(
            [f"link add {dev} type veth peer name {dev.replace('lxc', 'lxp')}", f"link set {dev} up",
             f"route add {ip}/32 dev {dev}"])
        reg.pods[key] = registry.PodRecord(key, node, pod_netns(cluster, key), str(ip), dev)
    for netns, lines in batches.items():
        subprocess.run(["ip", "-n", netns, "-batch", "-"], input="\n".join(lines) + "\n", text=True,
                       check=True, capture_output=True)
    reg.datapath = True
    registry.save(reg)


def commit_repo(root: Path) -> None:
    """Make the written repo a git repository with one commit (state/ and plans/ ignored)."""
    git_run(root, "init", "-q", "-b", "main")
    (root / ".gitignore").write_text("state/\nplans/\n")
    git_run(root, "add", "-A")
    git_run(root, "commit", "-qm", "first")


def lab_with_devices(topo: Topology, spec_pods: list[tuple[str, str, IPv4Address]]) -> float:
    """Bring up the lab of `topo`, then add the pods as devices; returns seconds."""
    t = time.perf_counter()
    cluster.up(topo, with_datapath=True)
    pods_as_devices(topo.cluster, spec_pods)
    return time.perf_counter() - t


def seed(root: Path, cluster: str) -> float:
    """Apply the first commit as `meshctl apply` does, minus its verification (probes need pod
    netns): plan, reconcile every node, record the apply in the state. Returns seconds."""
    from meshctl.app.plan import make_plan
    from meshctl.app.workspace import open_workspace
    from meshctl.apply.driver import LabDriver
    from meshctl.state import save_state

    t = time.perf_counter()
    ws = open_workspace(root)
    out = make_plan(ws)
    driver = LabDriver(cluster, ws.netns)
    for node, observed in out.observed.items():
        driver.reconcile(node, observed, out.compiled.nodes[node])
    save_state(ws.state_dir, out.state.record_apply(out.plan.plan_id, dict(out.compiled.nodes)))
    return time.perf_counter() - t


def _content(plan_json: str) -> dict[str, object]:
    """A JSON plan without what differs between two runs (when it was made, and its id)."""
    doc = json.loads(plan_json)
    return {k: v for k, v in doc.items() if k not in ("plan_id", "created_at")}


def _timed(root: Path, *args: str) -> tuple[float, subprocess.CompletedProcess[str]]:
    t = time.perf_counter()
    res = subprocess.run([str(MESHCTL), "-C", str(root), *args], capture_output=True, text=True)
    return time.perf_counter() - t, res


def phases(root: Path, profile: Path, *args: str) -> dict[str, float]:
    """Run the command again under cProfile: seconds per pipeline phase (cumulative)."""
    argv = [sys.executable, "-m", "cProfile", "-o", str(profile), str(MESHCTL), "-C", str(root), *args]
    subprocess.run(argv, capture_output=True, text=True)
    stats = pstats.Stats(str(profile)).stats  # type: ignore[attr-defined]
    out: dict[str, float] = {}
    for (file, _line, name), (_cc, _nc, _tt, cum, _callers) in stats.items():
        for (suffix, fn), label in PHASES.items():
            if name == fn and file.endswith(suffix):
                out[label] = out.get(label, 0.0) + cum
    return out


def lab_input(args: argparse.Namespace, cluster: str) -> tuple[
        tuple[str, ...], dict[str, IPv4Network], ClusterSpec, list[tuple[str, str, IPv4Address]]]:
    """The synthetic cluster of the size args for lab `cluster`: node names, their pod CIDRs, the
    spec, and each pod's (key, node, address) from .2 of its node's CIDR up."""
    nodes = tuple(f"node-{i + 1}" for i in range(args.nodes))
    cidrs = {n: IPv4Network(f"10.{100 + i}.0.0/16") for i, n in enumerate(nodes)}
    spec = synthetic(args.pods, args.policies, args.namespaces, len(nodes))
    spec = ClusterSpec(cluster, spec.nodes, spec.namespaces, spec.pods, spec.policies)
    addresses = {n: iter(cidrs[n].hosts()) for n in nodes}
    for n in nodes:
        next(addresses[n])  # .1 is the node's gateway
    return nodes, cidrs, spec, [(p.key, p.node, next(addresses[p.node])) for p in spec.pods]


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__)
    add_size_args(ap)
    args = ap.parse_args()

    nodes, cidrs, spec, pods = lab_input(args, CLUSTER)
    cnp = next(d for d in spec.policies if d.kind == "CiliumNetworkPolicy")

    with tempfile.TemporaryDirectory(prefix="meshctl-cli-bench-") as tmp:
        root = Path(tmp) / "repo"
        os.environ["MESHCTL_CACHE_DIR"] = str(Path(tmp) / "cache")
        write_repo(spec, root, {n: str(c) for n, c in cidrs.items()})
        commit_repo(root)
        topo = Topology(CLUSTER, IPv4Network("172.31.248.0/24"),
                        tuple(LabNode(n, cidrs[n]) for n in nodes))
        try:
            lab_s = lab_with_devices(topo, pods)
            apply_s = seed(root, CLUSTER)
            noop_s, noop = _timed(root, "plan", "--detailed-exitcode")  # full, nothing to do: the baseline
            if noop.returncode != 0:
                raise SystemExit(f"the first plan should find nothing to do:\n{noop.stderr[-3000:]}")
            (root / "policies" / f"{cnp.name}.yaml").unlink()
            git_run(root, "commit", "-qam", f"remove {cnp.name}")
            runs = {}
            for mode, extra in (("incremental", ()), ("full", ("--full",))):
                out = str(Path(tmp) / f"{mode}.json")
                runs[mode] = _timed(root, "plan", "-o", "json", "--out", out, *extra)
                if runs[mode][1].returncode != 0:
                    raise SystemExit(f"{mode} plan failed:\n{runs[mode][1].stderr[-3000:]}")
            if "Planned incrementally" not in runs["incremental"][1].stderr:
                raise SystemExit(f"the plan was not incremental:\n{runs['incremental'][1].stderr[-3000:]}")
            if _content(runs["incremental"][1].stdout) != _content(runs["full"][1].stdout):
                raise SystemExit("the incremental plan differs from the full plan")
            summary = json.loads(runs["full"][1].stdout)["summary"]
            repeats = [runs["incremental"][0]] + [  # this VM varies by a third from run to run
                _timed(root, "plan", "-o", "json", "--out", str(Path(tmp) / "again.json"))[0]
                for _ in range(REPEATS - 1)]
            again = str(Path(tmp) / "p2.json")
            plan_phases = phases(root, Path(tmp) / "plan.prof", "plan", "--full", "--out", again)
            state_mb = sum(f.stat().st_size for f in (root / "state").glob("*")) / 1e6
        finally:
            cluster.down(CLUSTER, nodes)

    print(f"input: {args.pods} pods, {args.policies} policies, {args.namespaces} namespaces, "
          f"{len(nodes)} lab nodes (lab with pod devices built in {lab_s:.1f} s)")
    print(f"first commit planned, reconciled and recorded in-process (apply minus verification): "
          f"{apply_s:.2f} s; state/ {state_mb:.1f} MB")
    print(f"meshctl plan, full, nothing to do (records the baseline): {noop_s:.2f} s")
    inc_s, full_s = runs["incremental"][0], runs["full"][0]
    print(f"meshctl plan (one CiliumNetworkPolicy removed): {summary}, the same plan both ways")
    print(f"  incremental: {inc_s:.2f} s   --full: {full_s:.2f} s   ratio: {full_s / inc_s:.1f}x faster")
    print(f"  the incremental plan run {REPEATS} times: median {statistics.median(repeats):.2f} s, "
          f"min {min(repeats):.2f} s, max {max(repeats):.2f} s")
    print(f"  {runs['incremental'][1].stderr.splitlines()[0]}")
    print("full plan phases (cumulative seconds under cProfile, which slows Python code):")
    for label in PHASES.values():
        if label in plan_phases:
            print(f"  {label:<12} {plan_phases[label]:.2f} s")


if __name__ == "__main__":
    main()
