"""DNS queries/s and latency: straight to the lab's resolver, and through the node's DNS proxy.

One lab node, set up the GitOps way (`meshctl lab up`, `meshctl apply` of a CiliumNetworkPolicy),
with a client pod and two kube-dns pods serving the same zone (meshctl.lab.server --dns-zone):
  direct  kube-dns `dns-a`: an L4 allow of UDP 53, no proxy
  proxy   kube-dns `dns-b`: a `rules.dns` allow (`*.bench.example`), so the datapath hands every
          datagram to the node's DNS proxy (started and supervised by the node's agent), which
          judges the query, forwards it, learns the answer's IPs for a toFQDNs selector and logs
          it (the agent stores each as flow records)
Throughput: Debian's dnsperf in the client pod (UDP, --outstanding queries in flight, pinned to
one CPU), over the zone's names. Latency: one query at a time from the client pod (p50 and p99
of --queries), where the time a hop adds is not queueing. Rounds alternate the two paths; each
figure is the median of the rounds. Goals: >= 10,000 queries/s through the proxy, p50 added
<= 1 ms.

Run as root: .venv/bin/python bench/dns_bench.py [--seconds 5] [--rounds 3] [--outstanding 64]
"""

from __future__ import annotations

import argparse
import os
import re
import shutil
import socket
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

from dnslib import DNSRecord

REPO = Path(__file__).resolve().parent.parent
MESHCTL = Path(sys.executable).with_name("meshctl")
CLUSTER = "dns-bench"
NAMES = 50  # api-N.bench.example
TOML = f"""[cluster]
name = "{CLUSTER}"
[[nodes]]
name = "node-1"
podCIDR = "10.232.1.0/24"
[rollout]
canary = "node-1"
verifyWindow = 0.5
[observability]
metricsBasePort = 0
""" + "".join(f"""[[lab.externalHosts]]
name = "api-{i}.bench.example"
address = "198.18.0.{i + 1}"
ports = [443]
ttl = 300
""" for i in range(NAMES))
DNS_POD = """---
apiVersion: v1
kind: Pod
metadata: {{name: {name}, namespace: kube-system, labels: {{k8s-app: kube-dns, bench: {name}}}}}
spec:
  nodeName: node-1
  containers: [{{name: coredns, image: coredns, ports: [{{containerPort: 53, protocol: UDP}}]}}]
"""
PODS = """apiVersion: v1
kind: Namespace
metadata: {name: bench}
---
apiVersion: v1
kind: Namespace
metadata: {name: kube-system}
---
apiVersion: v1
kind: Pod
metadata: {name: client, namespace: bench, labels: {app: client}}
spec:
  nodeName: node-1
  containers: [{name: c, image: dnsperf, ports: [{containerPort: 80}]}]
""" + DNS_POD.format(name="dns-a") + DNS_POD.format(name="dns-b")
POLICY = """apiVersion: cilium.io/v2
kind: CiliumNetworkPolicy
metadata: {name: client, namespace: bench}
spec:
  endpointSelector:
    matchLabels: {app: client}
  egress:
    - toEndpoints:
        - matchLabels: {k8s:io.kubernetes.pod.namespace: kube-system, bench: dns-a}
      toPorts:
        - ports: [{port: "53", protocol: UDP}]
    - toEndpoints:
        - matchLabels: {k8s:io.kubernetes.pod.namespace: kube-system, bench: dns-b}
      toPorts:
        - ports: [{port: "53", protocol: UDP}]
          rules:
            dns: [{matchPattern: "*.bench.example"}]
    - toFQDNs: [{matchPattern: "*.bench.example"}]
      toPorts:
        - ports: [{port: "443", protocol: TCP}]
"""


def run(*argv: str, timeout: float = 300) -> str:
    done = subprocess.run(argv, capture_output=True, text=True, timeout=timeout)
    if done.returncode != 0:
        raise SystemExit(f"{' '.join(argv[:4])}... failed: {done.stdout[-2000:]}{done.stderr[-2000:]}")
    return done.stdout


def dnsperf(netns: str, server: str, names: Path, seconds: int, outstanding: int, cpu: int) -> float:
    """Queries/s of one dnsperf run (UDP); refuses a run that lost queries."""
    out = run("taskset", "-c", str(cpu), "ip", "netns", "exec", netns, "dnsperf", "-s", server,
              "-d", str(names), "-l", str(seconds), "-q", str(outstanding), "-t", "2", timeout=seconds + 60)
    lost = int(re.search(r"Queries lost:\s+(\d+)", out).group(1))  # type: ignore[union-attr]
    completed = int(re.search(r"Queries completed:\s+(\d+)", out).group(1))  # type: ignore[union-attr]
    if lost > completed // 1000:
        raise SystemExit(f"dnsperf lost {lost} of {lost + completed} queries to {server}:\n{out}")
    return float(re.search(r"Queries per second:\s+([\d.]+)", out).group(1))  # type: ignore[union-attr]


def latencies(netns: str, server: str, count: int) -> tuple[float, float]:
    """(p50 ms, p99 ms) of `count` queries, one at a time, from inside the pod."""
    from meshctl.dataplane.netns import in_netns

    queries = [DNSRecord.question(f"api-{i % NAMES}.bench.example", "A").pack() for i in range(count)]
    times: list[float] = []
    with in_netns(netns), socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as sock:
        sock.settimeout(2)
        sock.connect((server, 53))
        for query in queries:
            start = time.perf_counter()
            sock.send(query)
            answer = sock.recv(4096)
            times.append(time.perf_counter() - start)
            if DNSRecord.parse(answer).header.rcode != 0 or answer[:2] != query[:2]:
                raise SystemExit(f"{server}: a bad answer to a bench query")
    times.sort()
    return times[len(times) // 2] * 1000, times[int(len(times) * 0.99)] * 1000


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--seconds", type=int, default=5)
    ap.add_argument("--rounds", type=int, default=3)
    ap.add_argument("--outstanding", type=int, default=64, help="dnsperf's queries in flight")
    ap.add_argument("--queries", type=int, default=2000, help="one-at-a-time queries per latency run")
    args = ap.parse_args()
    for tool in ("dnsperf", "taskset"):
        if shutil.which(tool) is None:
            raise SystemExit(f"{tool} is missing: run scripts/setup.sh (it installs dnsperf)")
    from meshctl.dataplane.dnsproxy import DnsFiles, proxy_pid
    from meshctl.lab import registry

    cores = os.cpu_count() or 1
    gen_cpu = 1 if cores > 1 else 0
    with tempfile.TemporaryDirectory(prefix="meshctl-dns-bench-") as tmp_s:
        tmp = Path(tmp_s)
        root = tmp / "repo"
        (root / "inventory").mkdir(parents=True)
        (root / "policies").mkdir()
        (root / "meshctl.toml").write_text(TOML)
        (root / "inventory" / "pods.yaml").write_text(PODS)
        (root / "policies" / "client.yaml").write_text(POLICY)
        names = tmp / "names.txt"
        names.write_text("".join(f"api-{i}.bench.example A\n" for i in range(NAMES)))
        try:
            run(str(MESHCTL), "lab", "up", "-C", str(root))
            run(str(MESHCTL), "apply", "-C", str(root), "--auto-approve")
            reg = registry.require(CLUSTER)
            client = reg.pods["bench/client"]
            paths = {"direct": reg.pods["kube-system/dns-a"].ip, "proxy": reg.pods["kube-system/dns-b"].ip}
            files = DnsFiles.of(CLUSTER, "node-1")
            if proxy_pid(files) is None:
                raise SystemExit("the node's DNS proxy is not running after the apply")
            for server in paths.values():
                latencies(client.netns, server, NAMES)  # warm: every name answered (and learned) once
            qps: dict[str, list[float]] = {n: [] for n in paths}
            lat: dict[str, list[tuple[float, float]]] = {n: [] for n in paths}
            for _ in range(args.rounds):
                for name, server in paths.items():
                    qps[name].append(dnsperf(client.netns, server, names, args.seconds, args.outstanding,
                                             gen_cpu))
                    lat[name].append(latencies(client.netns, server, args.queries))
            log_lines = sum(1 for _ in files.log.open()) if files.log.exists() else 0
        finally:
            subprocess.run([str(MESHCTL), "lab", "down", "-C", str(root)], capture_output=True, timeout=300)
    med = {n: (statistics.median(qps[n]), statistics.median(p for p, _ in lat[n]),
               statistics.median(p for _, p in lat[n])) for n in paths}
    print(f"DNS A queries over UDP for {NAMES} names, {args.rounds} rounds x {args.seconds} s per path, "
          f"medians. {cores} cores: dnsperf ({args.outstanding} queries in flight) on CPU {gen_cpu}; the "
          "resolver, the DNS proxy and the node's agent unpinned. Latency: "
          f"{args.queries} queries one at a time.")
    print(f"  {'path':<8} {'queries/s':>10} {'p50 ms':>8} {'p99 ms':>8}")
    for name, (q, p50, p99) in med.items():
        print(f"  {name:<8} {q:>10,.0f} {p50:>8.3f} {p99:>8.3f}")
    ours, added = med["proxy"][0], med["proxy"][1] - med["direct"][1]
    print(f"  proxy {ours:,.0f} queries/s: goal >= 10,000 {'met' if ours >= 10_000 else 'NOT met'}; "
          f"p50 added {added:.3f} ms: goal <= 1 {'met' if added <= 1 else 'NOT met'}; "
          f"direct / proxy throughput {med['direct'][0] / ours:.2f}x")
    print(f"  the proxy logged {log_lines:,} queries (the agent stores each as dns-request and dns-response)")
    return 0


if __name__ == "__main__":
    sys.exit(main())
