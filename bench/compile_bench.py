"""Compile benchmark: 10,000 pods, 1,000 policies, 500 namespaces (deterministic synthetic input).

Targets on the project machine: at most 2 s at 10,000 pods; at most 2.5 s and 4 GiB peak at
50,000 pods / 2,500 policies / 1,000 namespaces. Prints the total, per-phase times, the peak
memory of the process and the time per distinct policy entry (the growth measure).
Run: .venv/bin/python bench/compile_bench.py [--pods N --policies N --namespaces N --nodes N]
                                            [--runs N] [--fingerprint]
"""

from __future__ import annotations

import argparse
import copy
import hashlib
import random
import resource
import time
from ipaddress import IPv4Address
from pathlib import Path

import yaml

from meshctl.compile.cluster import Compiled, compile_spec
from meshctl.compile.documents import as_document
from meshctl.compile.identities import EndpointTable, IdentityTable
from meshctl.compile.spec import ClusterSpec, PodSpec

APPS = ("web", "api", "db", "cache", "worker", "queue", "auth", "search")


def synthetic(pods: int, policies: int, namespaces: int, nodes: int, seed: int = 7) -> ClusterSpec:
    rng = random.Random(seed)
    ns_names = [f"ns-{i:03d}" for i in range(namespaces)]
    ns_labels = {
        n: {"team": f"team-{i % 25}", "env": rng.choice(("prod", "staging", "dev"))}
        for i, n in enumerate(ns_names)
    }
    node_names = tuple(f"node-{i + 1}" for i in range(nodes))
    pod_specs = []
    base = int(IPv4Address("10.128.0.0"))
    for i in range(pods):
        ns = ns_names[i % namespaces]
        app = APPS[rng.randrange(len(APPS))]
        labels = {
            "app": app,
            "tier": f"t{APPS.index(app) % 3}",
            "pod-template-hash": f"{rng.randrange(1 << 30):x}",
        }
        pod_specs.append(
            PodSpec(
                ns,
                f"{app}-{i}",
                labels,
                node_names[i % nodes],
                (("http", 8080, "TCP"), ("metrics", 9090, "TCP")),
                IPv4Address(base + i + 1),
            )
        )
    docs = []
    for i in range(policies):
        ns = ns_names[i % namespaces]
        kind = rng.choice(("NetworkPolicy", "CiliumNetworkPolicy"))
        app, peer = rng.choice(APPS), rng.choice(APPS)
        if kind == "NetworkPolicy":
            spec = {
                "podSelector": {"matchLabels": {"app": app}},
                "policyTypes": ["Ingress", "Egress"],
                "ingress": [
                    {
                        "from": [
                            {"podSelector": {"matchLabels": {"app": peer}}},
                            {"namespaceSelector": {"matchLabels": {"team": f"team-{rng.randrange(25)}"}}},
                        ],
                        "ports": [{"port": "http"}, {"port": 8000, "endPort": 8100}],
                    }
                ],
                "egress": [
                    {
                        "to": [
                            {
                                "ipBlock": {
                                    "cidr": f"172.{rng.randrange(16, 32)}.0.0/16",
                                    "except": [f"172.{rng.randrange(16, 32)}.1.0/24"],
                                }
                            }
                        ],
                        "ports": [{"port": 443}],
                    },
                    {
                        "to": [
                            {
                                "namespaceSelector": {"matchLabels": {"team": f"team-{rng.randrange(25)}"}},
                                "podSelector": {"matchLabels": {"app": peer}},
                            }
                        ]
                    },
                ],
            }
        else:
            spec = {
                "endpointSelector": {"matchLabels": {"app": app}},
                "ingress": [
                    {
                        "fromEndpoints": [{"matchLabels": {"app": peer}}],
                        "toPorts": [{"ports": [{"port": "8080", "protocol": "TCP"}]}],
                    }
                ],
                "egressDeny": [{"toEntities": ["world"], "toPorts": [{"ports": [{"port": "25"}]}]}],
                "egress": [{"toEndpoints": [{}]}, {"toEntities": ["world"]}],
            }
        docs.append(
            as_document(
                {
                    "apiVersion": "x",
                    "kind": kind,
                    "metadata": {"name": f"pol-{i}", "namespace": ns},
                    "spec": spec,
                }
            )
        )
    return ClusterSpec("bench", node_names, ns_labels, tuple(pod_specs), tuple(docs))


def add_size_args(ap: argparse.ArgumentParser) -> None:
    """--pods --policies --namespaces --nodes: the synthetic cluster's size (shared by the benches)."""
    ap.add_argument("--pods", type=int, default=10_000)
    ap.add_argument("--policies", type=int, default=1_000)
    ap.add_argument("--namespaces", type=int, default=500)
    ap.add_argument("--nodes", type=int, default=3)


def write_repo(spec: ClusterSpec, root: Path, pod_cidrs: dict[str, str]) -> None:
    """`spec` as a desired-state repo (meshctl.toml, inventory and one file per policy), for the
    benches that run the CLI. ipBlock exceptions are moved inside their CIDR (the loader checks)."""
    (root / "inventory").mkdir(parents=True, exist_ok=True)
    (root / "policies").mkdir(exist_ok=True)
    toml = f'[cluster]\nname = "{spec.cluster}"\npolicyEnforcementMode = "default"\n'
    for node in spec.nodes:
        toml += f'\n[[nodes]]\nname = "{node}"\npodCIDR = "{pod_cidrs[node]}"\n'
    (root / "meshctl.toml").write_text(toml + "\n[rollout]\nbatchSize = 3\nverifyWindow = 0.05\n")
    namespaces = [{"apiVersion": "v1", "kind": "Namespace", "metadata": {"name": n, "labels": dict(labels)}}
                  for n, labels in spec.namespaces.items()]
    (root / "inventory" / "namespaces.yaml").write_text(yaml.safe_dump_all(namespaces, sort_keys=False))
    pods = [{"apiVersion": "v1", "kind": "Pod",
             "metadata": {"name": p.name, "namespace": p.namespace, "labels": dict(p.labels)},
             "spec": {"nodeName": p.node, "containers": [{"name": "c", "image": "example/app:1", "ports": [
                 {"name": name, "containerPort": port} for name, port, _ in p.ports]}]}}
            for p in spec.pods]
    (root / "inventory" / "pods.yaml").write_text(yaml.safe_dump_all(pods, sort_keys=False))
    for doc in spec.policies:
        body = copy.deepcopy(doc.body)
        body["apiVersion"] = "cilium.io/v2" if doc.kind.startswith("Cilium") else "networking.k8s.io/v1"
        for rule in body["spec"].get("egress", []):
            for peer in rule.get("to", []):
                if "ipBlock" in peer:
                    peer["ipBlock"]["except"] = [peer["ipBlock"]["cidr"].replace(".0.0/16", ".1.0/24")]
        (root / "policies" / f"{doc.name}.yaml").write_text(yaml.safe_dump(body, sort_keys=False))


def fingerprint(compiled: Compiled) -> str:
    """sha256 over every node's fingerprint and the catalog: proves an optimization changed nothing."""
    h = hashlib.sha256()
    for _, state in sorted(compiled.nodes.items()):
        h.update(state.fingerprint().encode())
    h.update(repr(sorted(compiled.catalog.cookies.items())).encode())
    h.update(repr(sorted(compiled.catalog.isolation.items(), key=str)).encode())
    h.update(repr([(i, x.labels, x.pods) for i, x in compiled.catalog.identities.items()]).encode())
    h.update(repr([str(w) for w in compiled.warnings]).encode())
    return h.hexdigest()


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__)
    add_size_args(ap)
    ap.add_argument("--runs", type=int, default=5, help="report the minimum (the machine is shared)")
    ap.add_argument("--fingerprint", action="store_true", help="print a sha256 of the whole result")
    args = ap.parse_args()
    t0 = time.perf_counter()
    spec = synthetic(args.pods, args.policies, args.namespaces, args.nodes)
    t1 = time.perf_counter()
    walls: list[float] = []
    cpus: list[float] = []
    phases: dict[str, float] = {}
    compiled = None
    for _ in range(max(1, args.runs)):
        run_phases: dict[str, float] = {}
        w0, c0 = time.perf_counter(), time.process_time()
        compiled = compile_spec(spec, IdentityTable(), EndpointTable(), "bench", timings=run_phases)
        walls.append(time.perf_counter() - w0)
        cpus.append(time.process_time() - c0)
        for name, secs in run_phases.items():
            phases[name] = min(secs, phases.get(name, secs))
    assert compiled is not None
    entries = sum(len(m) for s in compiled.nodes.values() for m in s.policies.values())
    distinct = len({id(m) for s in compiled.nodes.values() for m in s.policies.values()})
    print(
        f"input: {args.pods} pods, {args.policies} policies, {args.namespaces} namespaces, "
        f"{args.nodes} nodes "
        f"(generated in {t1 - t0:.2f} s)"
    )
    print(
        f"identities: {len(set(compiled.pod_identity.values()))}, "
        f"policy entries: {entries} in {distinct} shared maps, ipcache entries per node: "
        f"{max(len(s.ipcache) for s in compiled.nodes.values())}"
    )
    print(f"phases (min of {len(walls)} runs):")
    for name, secs in phases.items():
        print(f"  {name:<12} {secs:.3f} s")
    if args.fingerprint:
        print(f"fingerprint: {fingerprint(compiled)}")
    best = min(walls)
    distinct_entries = sum(len(m) for m in {id(m): m for s in compiled.nodes.values()
                                             for m in s.policies.values()}.values())
    peak = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 2**20  # KiB -> GiB
    budget, mem_budget = (2.0, None) if args.pods <= 10_000 else (2.5, 4.0)
    print(f"distinct policy entries: {distinct_entries} ({best / distinct_entries * 1e9:.0f} ns each)")
    print(f"peak memory: {peak:.2f} GiB" + (f" (budget {mem_budget} GiB)" if mem_budget else ""))
    ok = best <= budget and (mem_budget is None or peak <= mem_budget)
    print(
        f"compile: {best:.3f} s min of {len(walls)} (max {max(walls):.3f} s, cpu min {min(cpus):.3f} s) "
        f"(budget {budget} s) {'OK' if ok else 'OVER BUDGET'}"
    )


if __name__ == "__main__":
    main()
