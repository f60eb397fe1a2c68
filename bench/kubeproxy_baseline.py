"""kube-proxy's iptables and nftables modes, reproduced with real rules, as the baseline for meshctl's LB.

Three network namespaces per run: a client (`mc-bench-kpc`, 10.244.1.2), the node with the rules
(`mc-bench-kp`, routing between the two) and a backend (`mc-bench-kpb`, 10.244.2.x, a server on
8080 and 8081 that answers its port). N services get ClusterIPs 10.96.0.10 + i, each with B
endpoints (only the measured services' endpoints are real; the rest are addresses nobody uses).

Rules are what kube-proxy writes (kubernetes/kubernetes pkg/proxy/iptables/proxier.go and
pkg/proxy/nftables/proxier.go):
- iptables (nft backend and legacy, inside the bench netns only): one `iptables-restore -w
  --noflush --counters` of the filter and nat tables with KUBE-SERVICES -> KUBE-SVC-<hash>
  (`-m statistic --mode random --probability 1/(n-i)` with "%0.10f", the last rule without)
  -> KUBE-SEP-<hash> (KUBE-MARK-MASQ hairpin + DNAT), chain names from base32(sha256(...))[:16].
  An endpoint change is the whole table again ("full", kube-proxy before MinimizeIPTablesRestore)
  or KUBE-SERVICES plus the changed service's chains ("partial", kube-proxy >= 1.27 default).
- nftables (`nft` from the nftables package): table `ip kube-proxy`, a `service-ips` verdict map
  keyed by daddr . l4proto . dport, `service-<hash>-ns/name/tcp/port` chains with
  `numgen random mod n vmap`, `endpoint-<hash>-...__ip/port` chains with `dnat to`; an endpoint
  change is one incremental transaction for that service only (kube-proxy's nftables mode:
  `skipServiceUpdate` leaves every other service's chains out); the stale endpoint chain goes in
  a later cleanup transaction, as kube-proxy deletes stale chains a second later.

Timed: the `iptables-restore` / `nft -f` run only. The rule text is made before the clock, by
this script in Python (its time is reported as `gen`); kube-proxy's own computation in Go
(building the text from its service and endpoint maps) is not included.

Connect latency: TCP connect + first reply line from the client to a ClusterIP, DNAT'd to the
backend, for the FIRST and the LAST service of KUBE-SERVICES (iptables walks the chain rule by
rule, so the last one is the worst case; nftables does one map lookup).

Run as root: .venv/bin/python bench/kubeproxy_baseline.py [--sizes 1000,5000,20000] [--backends 2]
             [--modes iptables-nft,iptables-legacy,nftables] [--connects 200]
"""

from __future__ import annotations

import argparse
import base64
import hashlib
import os
import shutil
import signal
import socket
import statistics
import subprocess
import sys
import time
from collections.abc import Iterator, Sequence
from contextlib import contextmanager, suppress
from dataclasses import dataclass, field
from ipaddress import IPv4Address
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from meshctl.lab.netns import entered

NODE_NS, CLIENT_NS, BACKEND_NS = "mc-bench-kp", "mc-bench-kpc", "mc-bench-kpb"
CLIENT_IP, CLIENT_GW = "10.244.1.2", "10.244.1.1"
BACKEND_GW = "10.244.2.1"
CLUSTER_CIDR = "10.244.0.0/16"  # kube-proxy --cluster-cidr: sources outside are masqueraded
VIP_BASE = int(IPv4Address("10.96.0.10"))
FAKE_EP_BASE = int(IPv4Address("10.160.0.2"))  # endpoints of services nobody connects to
PORTS = (8080, 8081)  # backend server ports; a changed endpoint moves 8080 -> 8081
MODES = ("iptables-nft", "iptables-legacy", "nftables")
MASQ_MARK = "0x4000"
NAMESPACE = "bench"

_SERVER = r"""
import selectors, socket, sys
sel = selectors.DefaultSelector()
for port in map(int, sys.argv[1:]):
    s = socket.socket(); s.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    s.bind(("0.0.0.0", port)); s.listen(512); sel.register(s, selectors.EVENT_READ, port)
print("ready", flush=True)
while True:
    for key, _ in sel.select():
        conn, _ = key.fileobj.accept()
        conn.sendall(b"%d\n" % key.data)
        conn.close()
"""


# ---------------------------------------------------------------- names, as kube-proxy makes them

def _b32(text: str) -> str:
    return base64.b32encode(hashlib.sha256(text.encode()).digest()).decode()


def svc_chain(port_name: str, protocol: str = "tcp") -> str:
    """KUBE-SVC-<16>: servicePortPolicyClusterChain(servicePortName, protocol)."""
    return "KUBE-SVC-" + _b32(port_name + protocol)[:16]


def sep_chain(port_name: str, endpoint: str, protocol: str = "tcp") -> str:
    """KUBE-SEP-<16>: servicePortEndpointChainName(servicePortName, protocol, endpoint)."""
    return "KUBE-SEP-" + _b32(port_name + protocol + endpoint)[:16]


def probability(n: int) -> str:
    """computeProbability: 1/n with ten decimals."""
    return f"{1.0 / n:0.10f}"


def _nft_base(name: str) -> str:
    """hashAndTruncate: an 8-character hash prefix, then the readable name."""
    return _b32(name)[:8] + "-" + name


@dataclass
class ServiceSpec:
    """One service port and its endpoints ("ip:port")."""

    index: int
    vip: str
    port: int
    endpoints: list[str]

    @property
    def name(self) -> str:
        return f"svc-{self.index}"

    @property
    def port_name(self) -> str:
        """ServicePortName.String(): namespace/name:port."""
        return f"{NAMESPACE}/{self.name}:http"

    @property
    def nft_service_chain(self) -> str:
        return "service-" + _nft_base(f"{NAMESPACE}/{self.name}/tcp/http")

    def nft_endpoint_chain(self, ep: str) -> str:
        ip, port = ep.split(":")
        return "endpoint-" + _nft_base(f"{NAMESPACE}/{self.name}/tcp/http__{ip}/{port}")


def make_services(n: int, backends: int, real: Sequence[int], real_ips: Sequence[str]) -> list[ServiceSpec]:
    """n services; those at the `real` indexes point at the backend netns (port 8080)."""
    out = []
    fake = FAKE_EP_BASE
    for i in range(n):
        if i in real:
            eps = [f"{ip}:{PORTS[0]}" for ip in real_ips[:backends]]
        else:
            eps = [f"{IPv4Address(fake + j)}:{PORTS[0]}" for j in range(backends)]
            fake += backends
        out.append(ServiceSpec(index=i, vip=str(IPv4Address(VIP_BASE + i)), port=80, endpoints=eps))
    return out


# ---------------------------------------------------------------- iptables-restore text

_JUMPS_NAT = [
    '-A PREROUTING -m comment --comment "kubernetes service portals" -j KUBE-SERVICES',
    '-A OUTPUT -m comment --comment "kubernetes service portals" -j KUBE-SERVICES',
    '-A POSTROUTING -m comment --comment "kubernetes postrouting rules" -j KUBE-POSTROUTING',
]
_PORTALS = '-m conntrack --ctstate NEW -m comment --comment "kubernetes service portals" -j KUBE-SERVICES'
_JUMPS_FILTER = [
    '-A FORWARD -m comment --comment "kubernetes forwarding rules" -j KUBE-FORWARD',
    f"-A FORWARD {_PORTALS}",
    f"-A OUTPUT {_PORTALS}",
]


def _service_chain_rules(svc: ServiceSpec, chains: list[str], rules: list[str]) -> None:
    """KUBE-SVC and KUBE-SEP chains of one service (writeServiceToEndpointRules + endpoint chains)."""
    svc_name = svc_chain(svc.port_name)
    chains.append(f":{svc_name} - [0:0]")
    match = f'-m comment --comment "{svc.port_name} cluster IP" -m tcp -p tcp -d {svc.vip} --dport {svc.port}'
    rules.append(f"-A {svc_name} {match} ! -s {CLUSTER_CIDR} -j KUBE-MARK-MASQ")
    n = len(svc.endpoints)
    for i, ep in enumerate(svc.endpoints):
        sep = sep_chain(svc.port_name, ep)
        stat = f" -m statistic --mode random --probability {probability(n - i)}" if i < n - 1 else ""
        rules.append(f'-A {svc_name} -m comment --comment "{svc.port_name} -> {ep}"{stat} -j {sep}')
    for ep in svc.endpoints:
        sep = sep_chain(svc.port_name, ep)
        chains.append(f":{sep} - [0:0]")
        ip = ep.split(":")[0]
        rules.append(f"-A {sep} -m comment --comment {svc.port_name} -s {ip}/32 -j KUBE-MARK-MASQ")
        rules.append(f"-A {sep} -m comment --comment {svc.port_name} -m tcp -p tcp "
                     f"-j DNAT --to-destination {ep}")


def iptables_restore_text(services: Sequence[ServiceSpec], *, jumps: bool = False,
                          changed: set[int] | None = None, stale: Sequence[str] = ()) -> str:
    """The input of one kube-proxy sync: full (changed=None) or partial (only `changed` chains).

    `stale` chains are flushed and deleted (`:CHAIN` + `-X CHAIN`), as kube-proxy does.
    """
    filt = ["*filter", ":KUBE-NODEPORTS - [0:0]", ":KUBE-SERVICES - [0:0]",
            ":KUBE-EXTERNAL-SERVICES - [0:0]", ":KUBE-FORWARD - [0:0]", ":KUBE-PROXY-FIREWALL - [0:0]"]
    if jumps:
        filt += _JUMPS_FILTER
    filt += [
        "-A KUBE-FORWARD -m conntrack --ctstate INVALID -j DROP",
        f'-A KUBE-FORWARD -m comment --comment "kubernetes forwarding rules" -m mark --mark '
        f"{MASQ_MARK}/{MASQ_MARK} -j ACCEPT",
        '-A KUBE-FORWARD -m comment --comment "kubernetes forwarding conntrack rule" -m conntrack '
        "--ctstate RELATED,ESTABLISHED -j ACCEPT",
        "COMMIT",
    ]
    chains = [":KUBE-SERVICES - [0:0]", ":KUBE-NODEPORTS - [0:0]", ":KUBE-POSTROUTING - [0:0]",
              ":KUBE-MARK-MASQ - [0:0]"]
    rules = list(_JUMPS_NAT) if jumps else []
    rules += [
        f"-A KUBE-POSTROUTING -m mark ! --mark {MASQ_MARK}/{MASQ_MARK} -j RETURN",
        f"-A KUBE-POSTROUTING -j MARK --xor-mark {MASQ_MARK}",
        '-A KUBE-POSTROUTING -m comment --comment "kubernetes service traffic requiring SNAT" '
        "-j MASQUERADE --random-fully",
        f"-A KUBE-MARK-MASQ -j MARK --or-mark {MASQ_MARK}",
    ]
    for svc in services:
        rules.append(f'-A KUBE-SERVICES -m comment --comment "{svc.port_name} cluster IP" -m tcp -p tcp '
                     f"-d {svc.vip} --dport {svc.port} -j {svc_chain(svc.port_name)}")
        if changed is None or svc.index in changed:
            _service_chain_rules(svc, chains, rules)
    for chain in stale:
        chains.append(f":{chain} - [0:0]")
        rules.append(f"-X {chain}")
    rules.append('-A KUBE-SERVICES -m comment --comment "kubernetes service nodeports; NOTE: this must be '
                 'the last rule in this chain" -m addrtype --dst-type LOCAL -j KUBE-NODEPORTS')
    return "\n".join([*filt, "*nat", *chains, *rules, "COMMIT", ""])


# ---------------------------------------------------------------- nft text

def _nft_service(svc: ServiceSpec, out: list[str]) -> None:
    t = "ip kube-proxy"
    sc = svc.nft_service_chain
    out.append(f"add chain {t} {sc}")
    out.append(f"flush chain {t} {sc}")
    out.append(f"add rule {t} {sc} ip daddr {svc.vip} tcp dport {svc.port} ip saddr != {CLUSTER_CIDR} "
               "jump mark-for-masquerade")
    vmap = ", ".join(f"{i} : goto {svc.nft_endpoint_chain(ep)}" for i, ep in enumerate(svc.endpoints))
    for ep in svc.endpoints:
        ec = svc.nft_endpoint_chain(ep)
        ip = ep.split(":")[0]
        out.append(f"add chain {t} {ec}")
        out.append(f"flush chain {t} {ec}")
        out.append(f"add rule {t} {ec} ip saddr {ip} jump mark-for-masquerade")
        out.append(f"add rule {t} {ec} meta l4proto tcp dnat to {ep}")
    out.append(f"add rule {t} {sc} numgen random mod {len(svc.endpoints)} vmap {{ {vmap} }}")


def nft_build_text(services: Sequence[ServiceSpec]) -> str:
    """The whole kube-proxy table in one transaction (its first sync)."""
    t = "ip kube-proxy"
    out = [
        f"add table {t} {{ comment \"rules for kube-proxy\" ; }}",
        f"add chain {t} mark-for-masquerade",
        f"add rule {t} mark-for-masquerade mark set mark or {MASQ_MARK}",
        f"add chain {t} masquerading",
        f"add rule {t} masquerading mark and {MASQ_MARK} == 0 return",
        f"add rule {t} masquerading mark set mark xor {MASQ_MARK}",
        f"add rule {t} masquerading masquerade fully-random",
        f"add chain {t} nat-prerouting {{ type nat hook prerouting priority dstnat ; }}",
        f"add chain {t} nat-output {{ type nat hook output priority -100 ; }}",
        f"add chain {t} nat-postrouting {{ type nat hook postrouting priority srcnat ; }}",
        f"add rule {t} nat-postrouting jump masquerading",
        f"add map {t} service-ips {{ type ipv4_addr . inet_proto . inet_service : verdict ; "
        "comment \"ClusterIP, ExternalIP and LoadBalancer IP traffic\" ; }",
        f"add map {t} service-nodeports {{ type inet_proto . inet_service : verdict ; }}",
        f"add chain {t} services",
        f"add rule {t} services ip daddr . meta l4proto . th dport vmap @service-ips",
        f"add rule {t} services fib daddr type local ip daddr != 127.0.0.0/8 meta l4proto . th dport "
        "vmap @service-nodeports",
        f"add rule {t} nat-prerouting jump services",
        f"add rule {t} nat-output jump services",
    ]
    for svc in services:
        _nft_service(svc, out)
        out.append(f"add element {t} service-ips "
                   f"{{ {svc.vip} . tcp . {svc.port} : goto {svc.nft_service_chain} }}")
    return "\n".join(out) + "\n"


def nft_change_text(svc: ServiceSpec, stale: Sequence[str], sync: bool = True) -> str:
    """One incremental sync (the changed service's chains rewritten) and/or stale endpoint chains
    deleted (`sync=False`: the deletion alone, as kube-proxy's later cleanup transaction)."""
    out: list[str] = []
    if sync:
        _nft_service(svc, out)
    out += [f"delete chain ip kube-proxy {c}" for c in stale]
    return "\n".join(out) + "\n"


# ---------------------------------------------------------------- the bench topology

def _ip(ns: str | None, *args: str) -> None:
    argv = ["ip"] + (["-n", ns] if ns else []) + list(args)
    subprocess.run(argv, check=True, capture_output=True)


def _run_in(ns: str, argv: Sequence[str], stdin: str) -> float:
    """Run argv inside netns `ns` with `stdin`; wall seconds. RuntimeError with stderr on failure."""
    start = time.perf_counter()
    proc = subprocess.run(["nsenter", f"--net=/run/netns/{ns}", "--", *argv], input=stdin,
                          capture_output=True, text=True)
    elapsed = time.perf_counter() - start
    if proc.returncode != 0:
        raise RuntimeError(f"{' '.join(argv)} in {ns} failed: {proc.stderr.strip()[:2000]}")
    return elapsed


def _delete_netns(names: Sequence[str] = (CLIENT_NS, BACKEND_NS, NODE_NS)) -> None:
    for ns in names:
        if Path(f"/run/netns/{ns}").exists():
            subprocess.run(["ip", "netns", "delete", ns], capture_output=True)


def available_modes() -> list[str]:
    """The modes this machine can run (nftables needs the `nft` binary)."""
    have = {"iptables-nft": "iptables-nft-restore", "iptables-legacy": "iptables-legacy-restore",
            "nftables": "nft"}
    return [m for m in MODES if shutil.which(have[m])]


@dataclass
class Baseline:
    """A built bench: topology, backend server, the services and their rules (one mode)."""

    mode: str
    services: list[ServiceSpec]
    backends_per_service: int
    build_s: float = 0.0
    server_pid: int | None = None
    real_ips: list[str] = field(default_factory=list)
    last_gen_s: float = 0.0  # rule text generation of the last change (Python, before the clock)
    _changes: int = 0

    @property
    def measured(self) -> tuple[ServiceSpec, ServiceSpec]:
        """The first and the last service of KUBE-SERVICES (their endpoints are real)."""
        return self.services[0], self.services[-1]

    def _restore(self, text: str) -> float:
        binary = "iptables-nft-restore" if self.mode == "iptables-nft" else "iptables-legacy-restore"
        return _run_in(NODE_NS, [binary, "-w", "5", "--noflush", "--counters"], text)

    def _nft(self, text: str) -> float:
        return _run_in(NODE_NS, ["nft", "-f", "-"], text)

    def time_endpoint_change(self, partial: bool = False, index: int | None = None) -> float:
        """Move one endpoint of service `index` (default: the last) between ports 8080 and 8081.

        Returns the seconds the kernel update took (iptables-restore / nft run), the way
        kube-proxy applies it. The rule text is generated before the clock starts; that
        generation (this script's Python, not kube-proxy's Go) is kept in `last_gen_s`.
        nftables: kube-proxy's sync transaction rewrites the changed service's chains only; the
        stale endpoint chain is deleted in a separate transaction of a later sync (after a
        second), so it is deleted here afterwards, off the clock.
        """
        svc = self.services[-1 if index is None else index]
        old = svc.endpoints[0]
        ip, port = old.split(":")
        new = f"{ip}:{PORTS[1] if int(port) == PORTS[0] else PORTS[0]}"
        svc.endpoints[0] = new
        self._changes += 1
        start = time.perf_counter()
        if self.mode == "nftables":
            text = nft_change_text(svc, stale=())
            self.last_gen_s = time.perf_counter() - start
            elapsed = self._nft(text)
            self._nft(nft_change_text(svc, stale=[svc.nft_endpoint_chain(old)], sync=False))
            return elapsed
        text = iptables_restore_text(self.services, changed={svc.index} if partial else None,
                                     stale=[sep_chain(svc.port_name, old)])
        self.last_gen_s = time.perf_counter() - start
        return self._restore(text)

    def connect_once(self, vip: str, port: int = 80, timeout: float = 2.0) -> str:
        """One TCP connection from the client netns; returns the backend's reply line."""
        with entered(CLIENT_NS):
            sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
        try:
            sock.settimeout(timeout)
            sock.connect((vip, port))
            return _read_line(sock)
        finally:
            sock.close()

    def connect_latency(self, count: int = 200, which: str = "last") -> dict[str, float]:
        """Median and p90 (microseconds) of `count` connect + first-line exchanges to a ClusterIP."""
        svc = self.measured[0 if which == "first" else 1]
        return _connect_latency(CLIENT_NS, svc, count)

    def close(self) -> None:
        if self.server_pid is not None:
            _stop_server(self.server_pid)
            self.server_pid = None
        _delete_netns()


def _connect_latency(client_ns: str, svc: ServiceSpec, count: int) -> dict[str, float]:
    """Median and p90 (microseconds) of `count` connects from `client_ns`: kube-proxy's and meshctl's rows."""
    samples = []
    with entered(client_ns):
        for _ in range(count):
            sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
            try:
                sock.settimeout(2.0)
                start = time.perf_counter()
                sock.connect((svc.vip, svc.port))
                _read_line(sock)
                samples.append((time.perf_counter() - start) * 1e6)
            finally:
                sock.close()
    samples.sort()
    return {"median_us": statistics.median(samples), "p90_us": samples[int(0.9 * (len(samples) - 1))]}


def _stop_server(pid: int) -> None:
    """Stop and reap a backend server started by _start_server."""
    with suppress(ProcessLookupError):
        os.kill(pid, signal.SIGTERM)
    with suppress(ChildProcessError):
        os.waitpid(pid, 0)


def _read_line(sock: socket.socket) -> str:
    data = b""
    while not data.endswith(b"\n"):
        chunk = sock.recv(64)
        if not chunk:
            break
        data += chunk
    return data.decode().strip()


def _topology(backends: int, node_ns: str = NODE_NS, client_ns: str = CLIENT_NS,
              backend_ns: str = BACKEND_NS) -> list[str]:
    """Client, node and backend netns (the bench passes its own names); returns the backend addresses."""
    _delete_netns((client_ns, backend_ns, node_ns))
    for ns in (node_ns, client_ns, backend_ns):
        _ip(None, "netns", "add", ns)
        _ip(ns, "link", "set", "lo", "up")
    _ip(node_ns, "link", "add", "c0", "type", "veth", "peer", "name", "eth0", "netns", client_ns)
    _ip(node_ns, "link", "add", "b0", "type", "veth", "peer", "name", "eth0", "netns", backend_ns)
    _ip(node_ns, "addr", "add", f"{CLIENT_GW}/24", "dev", "c0")
    _ip(node_ns, "addr", "add", f"{BACKEND_GW}/24", "dev", "b0")
    for dev in ("c0", "b0"):
        _ip(node_ns, "link", "set", dev, "up")
    _ip(client_ns, "addr", "add", f"{CLIENT_IP}/24", "dev", "eth0")
    _ip(client_ns, "link", "set", "eth0", "up")
    _ip(client_ns, "route", "add", "default", "via", CLIENT_GW)
    real = [f"10.244.2.{2 + i}" for i in range(backends)]
    for ip in real:
        _ip(backend_ns, "addr", "add", f"{ip}/24", "dev", "eth0")
    _ip(backend_ns, "link", "set", "eth0", "up")
    _ip(backend_ns, "route", "add", "default", "via", BACKEND_GW)
    with entered(node_ns):
        Path("/proc/sys/net/ipv4/ip_forward").write_text("1")
    return real


def _start_server(backend_ns: str = BACKEND_NS) -> int:
    """The backend server (answers 8080 and 8081 with its port) in `backend_ns`; its pid."""
    proc = subprocess.Popen(
        ["nsenter", f"--net=/run/netns/{backend_ns}", "--", sys.executable, "-c", _SERVER,
         *map(str, PORTS)], stdout=subprocess.PIPE, stderr=subprocess.DEVNULL, text=True)
    assert proc.stdout is not None
    if proc.stdout.readline().strip() != "ready":
        proc.kill()
        raise RuntimeError("bench backend server did not start")
    return proc.pid


def build(n_services: int, backends_per_service: int = 2, mode: str = "iptables-nft") -> Baseline:
    """Topology + server + kube-proxy rules for `n_services`; `build_s` = the kernel update time."""
    if mode not in MODES:
        raise ValueError(f"mode {mode!r}: expected one of {', '.join(MODES)}")
    if n_services < 2 or backends_per_service < 1:
        raise ValueError("need at least 2 services and 1 backend per service")
    real = _topology(backends_per_service)
    services = make_services(n_services, backends_per_service, (0, n_services - 1), real)
    base = Baseline(mode=mode, services=services, backends_per_service=backends_per_service, real_ips=real)
    try:
        base.server_pid = _start_server()
        if mode == "nftables":
            base.build_s = base._nft(nft_build_text(services))
        else:
            base.build_s = base._restore(iptables_restore_text(services, jumps=True))
    except BaseException:
        base.close()
        raise
    return base


@contextmanager
def built(n_services: int, backends_per_service: int = 2, mode: str = "iptables-nft") -> Iterator[Baseline]:
    base = build(n_services, backends_per_service, mode)
    try:
        yield base
    finally:
        base.close()


def time_endpoint_change(base: Baseline, partial: bool = False) -> float:
    return base.time_endpoint_change(partial=partial)


def connect_latency(base: Baseline, count: int = 200, which: str = "last") -> dict[str, float]:
    return base.connect_latency(count, which)


# ---------------------------------------------------------------- main

def _timed(base: Baseline, partial: bool = False) -> tuple[float, float]:
    """(kernel update ms, rule text generation ms) of one endpoint change: medians of 3 runs, or
    1 run when one already takes over a second (keeps runtime bounded)."""
    runs = [(base.time_endpoint_change(partial=partial) * 1e3, base.last_gen_s * 1e3)]
    if runs[0][0] <= 1000:
        runs += [(base.time_endpoint_change(partial=partial) * 1e3, base.last_gen_s * 1e3) for _ in range(2)]
    return statistics.median(r[0] for r in runs), statistics.median(r[1] for r in runs)


def run(sizes: Sequence[int], backends: int, modes: Sequence[str], connects: int,
        budget_s: float = 30.0) -> list[dict[str, object]]:
    """One row per (size, mode). A mode whose build would exceed `budget_s` at the next size
    (projected quadratically from the last one: chain creation grows faster than linearly in
    iptables-nft and nft) is skipped there and reported as such, to keep the run short."""
    rows: list[dict[str, object]] = []
    last: dict[str, tuple[int, float]] = {}
    for n in sorted(sizes):
        for mode in modes:
            if mode in last:
                prev_n, prev_s = last[mode]
                projected = prev_s * (n / prev_n) ** 2
                if projected > budget_s:
                    print(f"{mode:16} {n:>6}  skipped: build projected at ~{projected:.0f} s "
                          f"(> --budget {budget_s:.0f} s)", flush=True)
                    rows.append({"mode": mode, "services": n, "skipped": True,
                                 "projected_build_s": projected})
                    continue
            with built(n, backends, mode) as base:
                last[mode] = (n, base.build_s)
                row: dict[str, object] = {"mode": mode, "services": n, "build_ms": base.build_s * 1e3}
                row["change_ms"], row["gen_ms"] = _timed(base)
                if mode != "nftables":
                    row["change_partial_ms"], row["gen_partial_ms"] = _timed(base, partial=True)
                row["connect_first"] = base.connect_latency(connects, "first")
                row["connect_last"] = base.connect_latency(connects, "last")
                rows.append(row)
                _print_row(row)
    return rows


def _print_row(row: dict[str, object]) -> None:
    first, last = row["connect_first"], row["connect_last"]
    assert isinstance(first, dict) and isinstance(last, dict)
    partial = row.get("change_partial_ms")
    partial_s = f"{partial:8.1f}" if isinstance(partial, float) else "       -"
    print(f"{row['mode']:16} {row['services']:>6} {row['build_ms']:9.1f} {row['change_ms']:9.1f} {partial_s} "
          f"{first['median_us']:8.0f} {first['p90_us']:8.0f} {last['median_us']:8.0f} {last['p90_us']:8.0f}",
          flush=True)


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--sizes", default="1000,5000,20000", help="service counts, comma-separated")
    ap.add_argument("--backends", type=int, default=2, help="endpoints per service")
    ap.add_argument("--modes", default=",".join(MODES), help="iptables-nft, iptables-legacy, nftables")
    ap.add_argument("--connects", type=int, default=200, help="connections per latency sample")
    ap.add_argument("--budget", type=float, default=30.0,
                    help="skip a mode at a size whose build is projected above this many seconds")
    a = ap.parse_args(argv)
    if os.geteuid() != 0:
        print("needs root (network namespaces, iptables)", file=sys.stderr)
        return 1
    have = available_modes()
    modes = [m for m in a.modes.split(",") if m]
    for m in modes:
        if m not in have:
            print(f"skipping {m}: not installed (nftables: apt-get install nftables)", file=sys.stderr)
    modes = [m for m in modes if m in have]
    print("kube-proxy baseline: times in ms (kernel update only), latency in us (connect + first reply)")
    print(f"{'mode':16} {'svcs':>6} {'build':>9} {'change':>9} {'partial':>8} "
          f"{'1st med':>8} {'1st p90':>8} {'last med':>8} {'last p90':>8}")
    run([int(s) for s in a.sizes.split(",") if s], a.backends, modes, a.connects, a.budget)
    return 0


if __name__ == "__main__":
    sys.exit(main())
