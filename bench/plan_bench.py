"""Plan benchmark: 10,000 pods and 1,000 policies against a real 3-node lab.

The desired side is synthetic (bench/compile_bench.py's generator, no YAML); the live side is
a real lab of 3 node netns with the datapath loaded. The GitOps case: every node already holds
the compiled state of the previous commit, and the new commit removes one policy (default);
with --empty, only node-1 is populated (every entry is a create: the first apply). Timed:
compile + observe of the nodes (pinned maps, real syscalls) + diff into a Plan + writing the
plan file, as `meshctl plan` does. Budget: 3 s (5 s for 20 nodes and 20,000 pods).
Connectivity impact is skipped at this size (meshctl.toml [policy] impactMaxPods), as the CLI
does. Like a plan after an apply, the policy map cache (meshctl.observe.mapcache, in a temporary
MESHCTL_CACHE_DIR) was learned by the apply's verification observe; in-process decode caches
are cleared before timing (a fresh process).

Prints each phase with the entries it handles (per-entry cost: the growth measure) and the
peak memory of the process.

Run as root: .venv/bin/python bench/plan_bench.py [--pods N --policies N --namespaces N --nodes N]
"""

from __future__ import annotations

import argparse
import cProfile
import dataclasses
import os
import pstats
import resource
import sys
import tempfile
import time
from ipaddress import IPv4Network
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))

from compile_bench import add_size_args, synthetic

from meshctl.compile import EndpointTable, IdentityTable
from meshctl.compile.cluster import compile_spec
from meshctl.lab import cluster
from meshctl.lab.topology import LabNode, Topology

CLUSTER = "ap-plan-bench"
BUDGET_S = 3.0
BUDGET_20_NODES_S = 5.0  # 20 nodes, 20,000 pods


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__)
    add_size_args(ap)
    ap.add_argument("--empty", action="store_true", help="only node-1 starts populated")
    ap.add_argument("--profile", choices=("diff", "write"), help="print that phase's costliest functions")
    args = ap.parse_args()

    from meshctl.apply.driver import LabDriver
    from meshctl.backend.lab import LabBackend
    from meshctl.dataplane import maps
    from meshctl.dataplane.node import build_hash, default_object_path
    from meshctl.observe import parse
    from meshctl.plan import build_plan, write_plan

    nodes = tuple(f"node-{i + 1}" for i in range(args.nodes))
    topo = Topology(
        CLUSTER, IPv4Network("172.31.249.0/24"),
        tuple(LabNode(n, IPv4Network(f"10.99.{i + 1}.0/24")) for i, n in enumerate(nodes)),
    )
    spec = synthetic(args.pods, args.policies, args.namespaces, len(nodes))
    build = build_hash(default_object_path())
    cache_dir = tempfile.TemporaryDirectory(prefix="meshctl-cache-")
    os.environ["MESHCTL_CACHE_DIR"] = cache_dir.name
    try:
        up = cluster.up(topo, with_datapath=True)
        netns = {n: r.netns for n, r in up.registry.nodes.items()}
        driver = LabDriver(CLUSTER, netns)
        first = compile_spec(spec, IdentityTable(), EndpointTable(), build)
        seeded = nodes[:1] if args.empty else nodes
        t = time.perf_counter()
        for node in seeded:
            seed = dataclasses.replace(first.nodes[node], attachments=frozenset())  # no veths here
            driver.reconcile(node, driver.observe(node), seed)
        populate = time.perf_counter() - t
        LabBackend(CLUSTER, netns).observe_many(seeded)  # apply's verification observe learns the map cache
        for memo in (maps._TABLES, maps._RAW_KEYS, maps._RAW_VALUES, parse._LAZY):
            memo.clear()  # type: ignore[attr-defined]
        ids, eps = first.identities, first.endpoint_ids  # a second run keeps the numbers (state)
        spec = dataclasses.replace(spec, policies=spec.policies[1:])  # the commit under review

        t0 = time.perf_counter()
        compiled = compile_spec(spec, ids, eps, build)
        t1 = time.perf_counter()
        observed = LabBackend(CLUSTER, netns).observe_many(nodes)
        t2 = time.perf_counter()
        # the synthetic pods have no veths in this lab: compare without attachments
        intended = {n: dataclasses.replace(s, attachments=frozenset()) for n, s in compiled.nodes.items()}
        profile = cProfile.Profile() if args.profile else None
        if profile and args.profile == "diff":
            profile.enable()
        plan = build_plan(observed, intended, compiled.catalog, impact=False)
        if profile:
            profile.disable()
        t3 = time.perf_counter()
        with tempfile.TemporaryDirectory() as tmp:
            if profile and args.profile == "write":
                profile.enable()
            path = write_plan(plan, Path(tmp) / "plan.json")
            if profile:
                profile.disable()
            size = path.stat().st_size
        t4 = time.perf_counter()
    finally:
        cluster.down(CLUSTER, nodes)
        cache_dir.cleanup()

    entries = {n: len(s.ipcache) + sum(len(m) for m in s.policies.values()) for n, s in observed.items()}
    distinct = sum(len(m) for m in {id(m): m for s in compiled.nodes.values()
                                    for m in s.policies.values()}.values())
    # what the nodes hold: inner maps are shared per identity, so each distinct map once per node
    held = sum(len(s.ipcache) + len(s.endpoints) + sum(len(m) for m in {id(m): m for m in s.policies.values()}
                                                        .values()) for s in intended.values())
    print(f"input: {args.pods} pods, {args.policies} policies (1 removed by the new commit), "
          f"{len(nodes)} lab nodes")
    print(f"live: {', '.join(seeded)} populated in {populate:.2f} s ({sum(entries.values())} map entries)")
    per_node = {n.node: len(n.changes) for n in plan.nodes}
    print(f"plan: {len(plan.changes)} changes {per_node}; plan file {size / 1e6:.1f} MB")

    def row(name: str, secs: float, n: int, what: str) -> None:
        print(f"  {name:<8} {secs:.3f} s  {n:>9} {what:<22} {secs / max(n, 1) * 1e9:>6.0f} ns each")

    row("compile", t1 - t0, distinct, "distinct entries")
    row("observe", t2 - t1, held, "entries held")
    row("diff", t3 - t2, held, "entries compared")
    row("write", t4 - t3, len(plan.changes), "changes written")
    print(f"peak memory: {resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 2**20:.2f} GiB")
    if profile:
        pstats.Stats(profile).sort_stats("tottime").print_stats(15)
    total = t4 - t0
    budget = BUDGET_S if args.nodes < 20 else BUDGET_20_NODES_S
    print(f"plan total: {total:.3f} s (budget {budget} s) {'OK' if total <= budget else 'OVER BUDGET'}")


if __name__ == "__main__":
    main()
