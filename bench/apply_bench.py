"""Apply benchmark: dataplane time of a one-policy change touching one endpoint (budget 50 ms/node).

A copy of examples/three-tier runs in a real lab. After the first apply, the policy
`api-from-frontend` moves from port 3000 to 3001: one endpoint (demo/api on node-2) gets a
new policy map. Timed, alternating between the two versions:
- reconcile: the kernel work (new inner LPM map filled, one pointer swap), what the budget is for;
- node step: what the engine does per node besides verification: fsync'd journal record,
  reconcile, and the observe that checks the result.

Run as root: .venv/bin/python bench/apply_bench.py [--rounds N]
"""

from __future__ import annotations

import argparse
import re
import shutil
import statistics
import tempfile
import time
from pathlib import Path

REPO = Path(__file__).resolve().parent.parent
CLUSTER = "ap-apply-bench"
BUDGET_MS = 50.0


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__)
    ap.add_argument("--rounds", type=int, default=40)
    args = ap.parse_args()

    from meshctl.app.apply import apply_plan
    from meshctl.app.plan import make_plan
    from meshctl.app.workspace import open_workspace
    from meshctl.apply.driver import LabDriver
    from meshctl.lab import cluster
    from meshctl.lab.repo import cluster_of, load_topology
    from meshctl.state import Journal

    with tempfile.TemporaryDirectory() as tmp:
        repo = Path(tmp) / "repo"
        shutil.copytree(REPO / "examples" / "three-tier", repo)
        toml = repo / "meshctl.toml"
        text = re.sub(r'(?m)^name = "three-tier"', f'name = "{CLUSTER}"', toml.read_text())
        toml.write_text(re.sub(r"(?m)^verifyWindow = .*$", "verifyWindow = 0", text))
        name, nodes = cluster_of(repo)
        try:
            cluster.up(load_topology(repo), with_datapath=True)
            ws = open_workspace(repo)
            first = apply_plan(ws, make_plan(ws).plan, checks=False)
            assert first.result.ok, first.result.summary()
            policy = repo / "policies" / "frontend-to-api.yaml"
            policy.write_text(policy.read_text().replace('port: "3000"', 'port: "3001"', 1))
            plan = make_plan(open_workspace(repo)).plan
            touched = [n for n in plan.nodes if n.changes]
            assert [n.node for n in touched] == ["node-2"], [n.node for n in touched]
            node = touched[0]
            driver = LabDriver(ws.cluster, ws.netns)
            a = driver.observe(node.node)
            b = node.intended
            print(f"change: {len(node.changes)} object(s) on {node.node}: "
                  + "; ".join(f"{c.action.symbol} {c.address}" for c in node.changes))
            journal = Journal(ws.state_dir, "bench")
            reconcile_ms, step_ms = [], []
            current, target = a, b
            for _ in range(args.rounds):
                t0 = time.perf_counter()
                journal.begin(node.node, current, target)
                t1 = time.perf_counter()
                driver.reconcile(node.node, current, target)
                t2 = time.perf_counter()
                assert driver.observe(node.node) == target
                t3 = time.perf_counter()
                reconcile_ms.append((t2 - t1) * 1e3)
                step_ms.append((t3 - t0) * 1e3)
                current, target = target, current
            journal.clear()
        finally:
            cluster.down(name, nodes)

    def stats(xs: list[float]) -> str:
        p90 = sorted(xs)[int(len(xs) * 0.9)]
        return f"median {statistics.median(xs):.2f} ms, p90 {p90:.2f} ms, max {max(xs):.2f} ms"

    med = statistics.median(reconcile_ms)
    print(f"reconcile (dataplane) over {args.rounds} rounds: {stats(reconcile_ms)}")
    print(f"node step (journal fsync + reconcile + observe): {stats(step_ms)}")
    print(f"apply one-policy change: {med:.2f} ms per node (budget {BUDGET_MS:.0f} ms) "
          f"{'OK' if med <= BUDGET_MS else 'OVER BUDGET'}")


if __name__ == "__main__":
    main()
