"""HTTP keep-alive requests/s and latency: direct, through meshctl's L7 path, and through haproxy.

One lab node with two pods, a client and a server, set up the GitOps way (`meshctl lab up`,
`meshctl apply` of a CiliumNetworkPolicy). The server pod runs haproxy as a fixed 200 backend
(C, so the backend is never the bottleneck) on two ports:
  direct   9090: an L4 allow, no proxy
  meshctl  8080: an L7 rule (GET /api/.*): the datapath hands the connection to the node's Envoy
           (started and supervised by the node's agent, which also stores every request as flows)
  haproxy  a second haproxy in the node's netns, as the reference proxy, with the same path ACL
           (`path_reg ^/api/.*`, 403 otherwise), forwarding to the server's 9090
  envoy    Envoy alone as a second reference, next to haproxy with the same ACL as a regex route (no
           RBAC, access log or transparent sockets): the floor of the proxy meshctl drives, so the
           report can split the gap to haproxy into Envoy's own cost and what meshctl adds to it
wrk (Debian's) runs in the client pod with keep-alive connections. Rounds alternate between the
three paths and two loads (--connections, which saturates the proxy's core, and 1 connection,
where the p50 a proxy hop adds is not queueing); each figure is the median of the rounds.
Goals: >= 10,000 requests/s through meshctl, p50 added <= 0.5 ms, throughput within 1.5x of
haproxy's.

Run as root: .venv/bin/python bench/l7_bench.py [--seconds 5] [--rounds 3] [--connections 16]
"""

from __future__ import annotations

import argparse
import contextlib
import http.client
import json
import os
import re
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
from collections.abc import Iterator
from pathlib import Path

REPO = Path(__file__).resolve().parent.parent
MESHCTL = Path(sys.executable).with_name("meshctl")
CLUSTER = "l7-bench"
TOML = f"""[cluster]
name = "{CLUSTER}"
[[nodes]]
name = "node-1"
podCIDR = "10.231.1.0/24"
[rollout]
canary = "node-1"
verifyWindow = 0.5
[observability]
metricsBasePort = 0
"""
PODS = """apiVersion: v1
kind: Namespace
metadata: {name: bench}
---
apiVersion: v1
kind: Pod
metadata: {name: client, namespace: bench, labels: {app: client}}
spec:
  nodeName: node-1
  containers: [{name: c, image: wrk, ports: [{containerPort: 80}]}]
---
apiVersion: v1
kind: Pod
metadata: {name: server, namespace: bench, labels: {app: server}}
spec:
  nodeName: node-1
  containers: [{name: s, image: haproxy, ports: [{containerPort: 3000}]}]
"""
# The reference haproxy connects from the node's address: a CIDR peer (a lab node's own address is
# not in its ipcache).
POLICY = """apiVersion: cilium.io/v2
kind: CiliumNetworkPolicy
metadata: {{name: server, namespace: bench}}
spec:
  endpointSelector:
    matchLabels: {{app: server}}
  ingress:
    - fromEndpoints:
        - matchLabels: {{app: client}}
      toPorts:
        - ports: [{{port: "9090", protocol: TCP}}, {{port: "3000", protocol: TCP}}]
    - fromEndpoints:
        - matchLabels: {{app: client}}
      toPorts:
        - ports: [{{port: "8080", protocol: TCP}}]
          rules:
            http: [{{method: GET, path: "/api/.*"}}]
    - fromCIDR: ["{node_ip}/32"]
      toPorts:
        - ports: [{{port: "9090", protocol: TCP}}]
"""
HAPROXY_HEAD = """global
  nbthread 1
  maxconn 4000
defaults
  mode http
  timeout connect 2s
  timeout client 60s
  timeout server 60s
"""
BACKEND = HAPROXY_HEAD + """frontend backend
  bind :8080
  bind :9090
  http-request return status 200 content-type text/plain string "ok"
"""
REFERENCE = HAPROXY_HEAD + """frontend reference
  bind {node_ip}:7000
  acl api path_reg ^/api/.*$
  http-request deny deny_status 403 unless api
  default_backend server
backend server
  http-reuse always
  server s1 {server_ip}:9090
"""
# Envoy itself as a second reference: the same ACL as haproxy's (a regex route to a static cluster,
# 403 otherwise), no RBAC, no access log, no transparent sockets: what Envoy costs on this machine
# before meshctl adds anything.
_T = "type.googleapis.com/envoy.extensions."


def envoy_reference(node_ip: str, server_ip: str) -> str:
    """Envoy's bootstrap (JSON, which Envoy reads as YAML)."""
    routes = [{"match": {"safe_regex": {"regex": "/api/.*"}}, "route": {"cluster": "server"}},
              {"match": {"prefix": "/"},
               "direct_response": {"status": 403, "body": {"inline_string": "Access denied"}}}]
    manager = {"@type": _T + "filters.network.http_connection_manager.v3.HttpConnectionManager",
               "stat_prefix": "reference",
               "http_filters": [{"name": "envoy.filters.http.router",
                                 "typed_config": {"@type": _T + "filters.http.router.v3.Router"}}],
               "route_config": {"virtual_hosts": [{"name": "all", "domains": ["*"], "routes": routes}]}}
    server = {"socket_address": {"address": server_ip, "port_value": 9090}}
    chain = {"filters": [{"name": "envoy.filters.network.http_connection_manager", "typed_config": manager}]}
    return json.dumps({"static_resources": {
        "listeners": [{"address": {"socket_address": {"address": node_ip, "port_value": 7001}},
                       "filter_chains": [chain]}],
        "clusters": [{"name": "server", "connect_timeout": "2s", "load_assignment": {
            "cluster_name": "server", "endpoints": [{"lb_endpoints": [{"endpoint": {"address": server}}]}]}}],
    }})


PATH = "/api/v1/items"


def run(*argv: str, timeout: float = 300) -> str:
    done = subprocess.run(argv, capture_output=True, text=True, timeout=timeout)
    if done.returncode != 0:
        raise SystemExit(f"{' '.join(argv[:4])}... failed: {done.stdout[-2000:]}{done.stderr[-2000:]}")
    return done.stdout


def write_repo(root: Path) -> None:
    (root / "inventory").mkdir(parents=True)
    (root / "meshctl.toml").write_text(TOML)
    (root / "inventory" / "pods.yaml").write_text(PODS)


@contextlib.contextmanager
def pinned(netns: str, cpu: int, argv: list[str], name: str, warmup: float) -> Iterator[int]:
    """`argv` in `netns` on CPU `cpu` for the block (its pid), stopped after."""
    proc = subprocess.Popen(["taskset", "-c", str(cpu), "ip", "netns", "exec", netns, *argv],
                            stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)
    try:
        time.sleep(warmup)
        if proc.poll() is not None:
            raise SystemExit(f"{name} did not start: {proc.stderr.read().decode()[-1000:]}")  # type: ignore[union-attr]
        yield proc.pid
    finally:
        proc.terminate()
        proc.wait(10)


Running = contextlib.AbstractContextManager[int]


def haproxy(netns: str, config: str, tmp: Path, name: str, cpu: int) -> Running:
    path = tmp / f"{name}.cfg"
    path.write_text(config)
    return pinned(netns, cpu, ["haproxy", "-db", "-f", str(path)], f"haproxy {name}", 0.5)


def envoy(netns: str, config: str, tmp: Path, cpu: int) -> Running:
    from meshctl.dataplane.envoy import envoy_binary

    path = tmp / "envoy-reference.json"
    path.write_text(config)
    argv = [str(envoy_binary()), "-c", str(path), "--concurrency", "1", "--disable-hot-restart",
            "-l", "warning"]
    return pinned(netns, cpu, argv, "reference Envoy", 1.5)


def status(netns: str, host: str, port: int, path: str) -> int:
    """One request from inside a pod (the paths must answer as the policy says before timing)."""
    from meshctl.dataplane.netns import in_netns

    with in_netns(netns):
        conn = http.client.HTTPConnection(host, port, timeout=5)
        try:
            conn.request("GET", path)
            return conn.getresponse().status
        finally:
            conn.close()


Run = tuple[float, float, float]  # requests/s, p50 ms, p99 ms


def wrk(netns: str, url: str, seconds: int, connections: int, cpu: int) -> Run:
    """(requests/s, p50 ms, p99 ms) of one wrk run with one thread."""
    out = run("taskset", "-c", str(cpu), "ip", "netns", "exec", netns, "wrk", "-t1", f"-c{connections}",
              f"-d{seconds}s", "--latency", url, timeout=seconds + 60)
    if "Non-2xx" in out or "Socket errors" in out:
        raise SystemExit(f"wrk saw errors on {url}:\n{out}")
    rps = float(re.search(r"Requests/sec:\s+([\d.]+)", out).group(1))  # type: ignore[union-attr]
    lat = {q: _ms(v, unit) for q, v, unit in re.findall(r"^\s+(50|99)%\s+([\d.]+)(us|ms|s)$", out, re.M)}
    return rps, lat["50"], lat["99"]


def _ms(value: str, unit: str) -> float:
    return float(value) * {"us": 0.001, "ms": 1.0, "s": 1000.0}[unit]


def _medians(runs: dict[str, list[Run]]) -> dict[str, Run]:
    return {n: (statistics.median(r[0] for r in rs), statistics.median(r[1] for r in rs),
                statistics.median(r[2] for r in rs)) for n, rs in runs.items()}


def _goal(met: bool) -> str:
    return "met" if met else "NOT met"


def report(args: argparse.Namespace, cores: int, gen_cpu: int, server_cpu: int, loaded: dict[str, Run],
           single: dict[str, Run]) -> None:
    print(f"HTTP/1.1 keep-alive GET {PATH}, {args.rounds} rounds x {args.seconds} s per path and load, "
          f"medians. {cores} cores: wrk (1 thread) on CPU {gen_cpu}; the backend haproxy, both Envoys "
          f"(--concurrency 1) and the reference haproxy (nbthread 1) on CPU {server_cpu}; the node's "
          "agent (it stores every request as two flow records) unpinned.")
    print(f"  {'path':<12} {'requests/s':>11} {'p50 ms':>8} {'p99 ms':>8}   "
          f"{'1 connection: requests/s':>24} {'p50 ms':>8} {'p99 ms':>8}")
    for name in loaded:
        (rps, p50, p99), (rps1, p50_1, p99_1) = loaded[name], single[name]
        print(f"  {name:<12} {rps:>11,.0f} {p50:>8.3f} {p99:>8.3f}   "
              f"{rps1:>24,.0f} {p50_1:>8.3f} {p99_1:>8.3f}")
    ours, ref, plain = loaded["meshctl L7"][0], loaded["haproxy"][0], loaded["envoy plain"][0]
    added = single["meshctl L7"][1] - single["direct"][1]
    added_ref = single["haproxy"][1] - single["direct"][1]
    print(f"  ({args.connections} connections on the left: the proxy's core is saturated, so latency there "
          "is mostly queueing; the p50 added by a proxy hop is measured with 1 connection)")
    print(f"  meshctl L7 {ours:,.0f} requests/s: goal >= 10,000 {_goal(ours >= 10_000)}; p50 added "
          f"{added:.3f} ms (haproxy {added_ref:.3f} ms): goal <= 0.5 {_goal(added <= 0.5)}; "
          f"haproxy / meshctl throughput {ref / ours:.2f}x: goal <= 1.5 {_goal(ref / ours <= 1.5)}")
    print(f"  of that: haproxy / Envoy alone {ref / plain:.2f}x (Envoy's own cost), Envoy alone / meshctl "
          f"{plain / ours:.2f}x (what meshctl's RBAC, transparency and access log add)")


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--seconds", type=int, default=5)
    ap.add_argument("--rounds", type=int, default=3)
    ap.add_argument("--connections", type=int, default=16)
    args = ap.parse_args()
    for tool in ("haproxy", "wrk", "taskset"):
        if shutil.which(tool) is None:
            raise SystemExit(f"{tool} is missing: run scripts/setup.sh (it installs haproxy and wrk)")
    from meshctl.dataplane.envoy import ProxyFiles
    from meshctl.lab import registry
    from meshctl.proxy.supervisor import envoy_pid

    cores = os.cpu_count() or 1
    gen_cpu, server_cpu = (1, 0) if cores > 1 else (0, 0)
    with tempfile.TemporaryDirectory(prefix="meshctl-l7-bench-") as tmp_s:
        tmp = Path(tmp_s)
        root = tmp / "repo"
        write_repo(root)
        try:
            run(str(MESHCTL), "lab", "up", "-C", str(root))
            reg = registry.require(CLUSTER)
            client, server, node = reg.pods["bench/client"], reg.pods["bench/server"], reg.nodes["node-1"]
            node_ip = node.underlay_ip
            (root / "policies").mkdir()
            (root / "policies" / "server.yaml").write_text(POLICY.format(node_ip=node_ip))
            run(str(MESHCTL), "apply", "-C", str(root), "--auto-approve")
            pid = envoy_pid(ProxyFiles.of(CLUSTER, "node-1"))
            if pid is None:
                raise SystemExit("the node's Envoy is not running after the apply")
            run("taskset", "-a", "-p", "-c", str(server_cpu), str(pid))  # every Envoy thread
            with haproxy(server.netns, BACKEND, tmp, "backend", server_cpu), \
                    haproxy(node.netns, REFERENCE.format(node_ip=node_ip, server_ip=server.ip), tmp,
                            "reference", server_cpu), \
                    envoy(node.netns, envoy_reference(node_ip, server.ip), tmp,
                          server_cpu):
                paths = {"direct": (server.ip, 9090), "meshctl L7": (server.ip, 8080),
                         "haproxy": (node_ip, 7000), "envoy plain": (node_ip, 7001)}
                for name, (host, port) in paths.items():
                    got = (status(client.netns, host, port, PATH), status(client.netns, host, port, "/x"))
                    want = (200, 200) if name == "direct" else (200, 403)
                    if got != want:
                        raise SystemExit(f"{name}: GET {PATH} and GET /x answered {got}; expected {want}")
                results: dict[str, list[Run]] = {n: [] for n in paths}
                single: dict[str, list[Run]] = {n: [] for n in paths}
                for _ in range(args.rounds):
                    for name, (host, port) in paths.items():
                        url = f"http://{host}:{port}{PATH}"
                        results[name].append(wrk(client.netns, url, args.seconds, args.connections, gen_cpu))
                        single[name].append(wrk(client.netns, url, args.seconds, 1, gen_cpu))
        finally:
            subprocess.run([str(MESHCTL), "lab", "down", "-C", str(root)], capture_output=True, timeout=300)
    report(args, cores, gen_cpu, server_cpu, _medians(results), _medians(single))
    return 0


if __name__ == "__main__":
    sys.exit(main())
