"""Pod churn at scale: what one node agent sustains, and how soon a new pod's packets pass.

A synthetic cluster (compile_bench: 10,000 pods, 1,000 policies) of --nodes nodes; node-1 is a
real lab node with the datapath loaded and its pods as devices, the other nodes exist only as
the pods the lab's inventory store holds (they are node-1's peers: ipcache entries). The node
agent's endpoint sync (meshctl.agentapi.endpoints, what `meshctl agent` runs) holds the intent
of the synthetic policies and follows the store. Measured in one run:

1. sustained adds: pods added one after another, each followed by one sync of the agent (a third
   on node-1, a tenth with a label set new to the cluster): adds per second of the agent, and of
   agent plus store write (the lab's stand-in for the API server).
2. a burst: as many adds written to the store at once, then one sync: what batching gives.
3. add -> first allowed packet: a client pod (a real netns with the datapath on its veth) in a
   namespace no policy selects is written to the store while the agent runs as in `meshctl agent`
   (a sync every 50 ms); timed from the store write to the first answered TCP connection to a
   server pod on node-1 (p50, p99). Until its endpoint exists the datapath drops its packets.
4. baseline: how a pod got its endpoint before the agent followed pods: a full compile of the
   cluster, an observe of node-1 and a reconcile (a plan and an apply, minus their checks).

Run as root: .venv/bin/python bench/churn_bench.py [--pods N --policies N --namespaces N --nodes N]
"""

from __future__ import annotations

import argparse
import copy
import statistics
import sys
import tempfile
import threading
import time
from dataclasses import replace
from ipaddress import IPv4Address, IPv4Network
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))

from compile_bench import add_size_args
from plan_cli_bench import lab_input, pods_as_devices

from meshctl.agentapi.endpoints import EndpointSync, agent_dir, write_intent
from meshctl.apply.driver import LabDriver
from meshctl.compile import EndpointTable, IdentityTable
from meshctl.compile.cluster import compile_spec
from meshctl.compile.intent import NodeIntent
from meshctl.dataplane.node import current_build
from meshctl.lab import cluster, datapath, inventory, names, network, registry, servers
from meshctl.lab.inventory import StoredPod
from meshctl.lab.probe import tcp_connect_in
from meshctl.lab.topology import LabNode, Topology
from meshctl.nodestate import NodeState

CLUSTER = "ap-churn-bench"
NODE = "node-1"
SERVER_PORT = 8080


def pct(values: list[float], q: float) -> float:
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, round(q * (len(ordered) - 1)))]


def store_all(spec, ips: dict[str, IPv4Address]) -> int:  # type: ignore[no-untyped-def]
    def change(store: inventory.Store) -> None:
        store.namespaces.update({n: dict(labels) for n, labels in spec.namespaces.items()})
        store.namespaces["bench"] = {}
        for p in spec.pods:
            store.pods[p.key] = StoredPod(p.node, str(ips[p.key]), dict(p.labels),
                                          [list(port) for port in p.ports])

    return inventory.update(CLUSTER, change)


def real_pod(key: str, ip: IPv4Address, tcp: list[int]) -> registry.PodRecord:
    """A pod with its netns, veth and (with `tcp`) server on node-1, the datapath on its veth."""
    reg = copy.deepcopy(registry.require(CLUSTER))
    rec = registry.PodRecord(key, NODE, names.pod_netns(CLUSTER, key), str(ip), names.pod_veth(key),
                             tcp_ports=tcp)
    reg.pods[key] = rec
    registry.save(reg)  # `lab down` removes what the registry names
    node = reg.nodes[NODE]
    network.ensure_pod(node, rec)
    if tcp:
        rec.server_pid = servers.start(CLUSTER, rec)
    datapath.attach_node(CLUSTER, NODE, node.netns, {rec.veth: rec.address})
    return rec


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__)
    add_size_args(ap)
    ap.add_argument("--adds", type=int, default=60, help="pods added one by one (phase 1)")
    ap.add_argument("--burst", type=int, default=60, help="pods added at once (phase 2)")
    ap.add_argument("--clients", type=int, default=20, help="client pods timed to their first packet")
    args = ap.parse_args()

    nodes, cidrs, spec, pods = lab_input(args, CLUSTER)
    ips = {key: ip for key, _node, ip in pods}
    spec = replace(spec, pods=tuple(replace(p, ip=ips[p.key]) for p in spec.pods))  # the lab's addresses
    local = [(k, n, ip) for k, n, ip in pods if n == NODE]
    free = iter(list(cidrs[NODE].hosts())[len(local) + 1:])  # node-1's addresses after its pods
    far = iter(IPv4Network("10.250.0.0/16").hosts())  # other nodes' new pods (not routed here)
    topo = Topology(CLUSTER, IPv4Network("172.31.247.0/24"), (LabNode(NODE, cidrs[NODE]),))
    stop = threading.Event()
    with tempfile.TemporaryDirectory(prefix="meshctl-churn-bench-") as tmp:
        try:
            t = time.perf_counter()
            cluster.up(topo, with_datapath=True)
            pods_as_devices(CLUSTER, local)
            revision = store_all(spec, ips)
            lab_s = time.perf_counter() - t
            reg = registry.require(CLUSTER)
            driver = LabDriver(CLUSTER, {NODE: reg.nodes[NODE].netns})
            directory = agent_dir(Path(tmp) / "state", NODE)
            intent = NodeIntent.of(spec, current_build(), NodeState(NODE))
            write_intent(directory, intent)
            sync = EndpointSync(NODE, driver, directory, lambda: inventory.load(CLUSTER),
                                writer=lambda: driver.writer(NODE))
            t = time.perf_counter()
            first = sync.sync()
            first_s = time.perf_counter() - t
            assert first is not None and first.revision == revision

            # 4. the baseline: a full compile, an observe and a reconcile per pod
            store = inventory.load(CLUSTER)
            assert store is not None
            t = time.perf_counter()
            full = compile_spec(spec, IdentityTable.from_dict(store.identities),
                                EndpointTable.from_dict(store.endpoint_ids), current_build())
            live = driver.observe(NODE)
            target = replace(full.nodes[NODE], encryption=live.encryption, load_balancer=live.load_balancer)
            driver.reconcile(NODE, live, target)
            baseline_s = time.perf_counter() - t
            assert full.nodes[NODE].endpoints == live.endpoints

            # 1. sustained: one add, one sync
            agent_s, store_s = [], []
            apps = sorted({p.labels["app"] for p in spec.pods})
            namespaces = sorted(spec.namespaces)
            for i in range(args.adds):
                on_node = i % 3 == 0
                ip = next(free) if on_node else next(far)
                key = f"{namespaces[i % len(namespaces)]}/churn-{i}"
                labels = {"app": apps[i % len(apps)], "tier": "t0"}
                if i % 10 == 0:
                    labels["release"] = f"r{i}"  # a label set new to the cluster: a new identity
                if on_node:
                    pods_as_devices(CLUSTER, [(key, NODE, ip)])
                pod = StoredPod(NODE if on_node else "node-2", str(ip), labels, [["http", 8080, "TCP"]])
                t = time.perf_counter()
                inventory.update(CLUSTER, lambda s, key=key, pod=pod: s.add_pod(key, pod))
                t2 = time.perf_counter()
                done = sync.sync()
                assert done is not None and done.changed
                store_s.append(t2 - t)
                agent_s.append(time.perf_counter() - t2)

            # 2. a burst: many adds, one sync
            t = time.perf_counter()
            for i in range(args.burst):
                key, ip = f"{namespaces[i % len(namespaces)]}/burst-{i}", next(far)
                pod = StoredPod("node-3", str(ip), {"app": apps[i % len(apps)], "tier": "t1"})
                inventory.update(CLUSTER, lambda s, key=key, pod=pod: s.add_pod(key, pod))
            t2 = time.perf_counter()
            assert sync.sync() is not None
            burst_agent_s, burst_store_s = time.perf_counter() - t2, t2 - t

            # 3. add -> first allowed packet, the agent running as in `meshctl agent`
            server = real_pod("bench/server", next(free), [SERVER_PORT])
            inventory.update(CLUSTER, lambda s: s.add_pod("bench/server", StoredPod(
                NODE, server.ip, {"app": "server"}, [["http", SERVER_PORT, "TCP"]])))
            sync.sync()
            thread = sync.start(stop)
            firsts = []
            for i in range(args.clients):
                key = f"bench/client-{i}"
                rec = real_pod(key, next(free), [])
                if tcp_connect_in(rec.netns, server.ip, SERVER_PORT, 0.05).ok:
                    raise SystemExit(f"{key} connected before it had an endpoint")
                t = time.perf_counter()
                client = StoredPod(NODE, rec.ip, {"app": f"client-{i}"})
                inventory.update(CLUSTER, lambda s, key=key, client=client: s.add_pod(key, client))
                while not tcp_connect_in(rec.netns, server.ip, SERVER_PORT, 0.02).ok:
                    if time.perf_counter() - t > 10:
                        raise SystemExit(f"{key}: no answer within 10 s")
                firsts.append(time.perf_counter() - t)
            stop.set()
            thread.join(5)
            servers.stop(CLUSTER, server.server_pid, server.key)
        finally:
            stop.set()
            cluster.down(CLUSTER, (NODE,))

    local_n = sum(1 for _ in local)
    print(f"input: {args.pods} pods, {args.policies} policies, {args.namespaces} namespaces, "
          f"{len(nodes)} nodes; node-1 real with {local_n} pods as devices (lab and store {lab_s:.1f} s)")
    print(f"agent's first sync (observe, compile node-1, program {first.endpoints} endpoints and "
          f"{len(store.pods)} ipcache entries): {first_s:.2f} s")
    print(f"baseline, a pod's endpoint by full compile + observe + reconcile: {baseline_s:.3f} s per pod")
    med, store_med = statistics.median(agent_s), statistics.median(store_s)
    print(f"1. {args.adds} adds one by one (a third on node-1, a tenth new label sets): agent sync "
          f"p50 {med * 1000:.0f} ms, p99 {pct(agent_s, 0.99) * 1000:.0f} ms -> "
          f"{1 / med:.1f} adds/s ({baseline_s / med:.1f}x the baseline); store write p50 "
          f"{store_med * 1000:.0f} ms; agent + store {1 / (med + store_med):.1f} adds/s")
    per = (burst_agent_s + burst_store_s) / args.burst
    print(f"2. a burst of {args.burst} adds, one sync: agent {burst_agent_s:.3f} s "
          f"({args.burst / burst_agent_s:.0f} adds/s), store writes {burst_store_s:.2f} s; "
          f"together {1 / per:.1f} adds/s")
    print(f"3. add -> first allowed packet ({args.clients} client pods, agent syncing every 50 ms): "
          f"p50 {statistics.median(firsts) * 1000:.0f} ms, p99 {pct(firsts, 0.99) * 1000:.0f} ms, "
          f"max {max(firsts) * 1000:.0f} ms")


if __name__ == "__main__":
    main()
