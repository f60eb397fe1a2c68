"""The node's DNS proxy: judges each query by the DNS rules, forwards the allowed ones to the
resolver the pod asked, and learns the IPs of the answers for toFQDNs before the pod sees them.

The datapath hands it every datagram (and TCP connection) to a port with DNS rules
(bpf/lib/proxy.h): it receives them on 127.0.0.1:DNS_PROXY_PORT with the original destination,
and answers from that destination's address, so the pod sees its resolver answer. A query no
rule allows is answered REFUSED (or NXDOMAIN, `--reject nxdomain`) and never forwarded.

No first-packet drop: an answer's IPs that a toFQDNs selector of the node selects are written to
the ipcache (with the selector's identity, allocated when the selector appeared, so one write
per IP) before the answer is sent; the pod cannot connect to an IP it has not yet seen. The
learned IPs are kept in `learned.json` (atomically), so a restarted proxy or agent keeps them; an
IP leaves the ipcache once its TTL (at least `--min-ttl`) has passed and no tracked connection
uses it, after a grace period (applications ignore TTLs). Each query is one JSON line in
`queries.log`. Run by the node's agent: `python -m meshctl.proxy.dns --dir DIR --pins PINDIR`.
"""

from __future__ import annotations

import argparse
import contextlib
import json
import logging
import os
import signal
import socket
import struct
import sys
import threading
import time
from collections.abc import Iterable
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from ipaddress import IPv4Address, IPv4Network
from pathlib import Path
from typing import Any

from dnslib import QTYPE, RCODE, DNSError, DNSRecord

from meshctl.dataplane.dnsproxy import FORMAT, DnsFiles
from meshctl.dnswire import recv_message, send_message
from meshctl.fqdnmatch import FqdnSelector, normalize
from meshctl.nodestate import DNS_PROXY_PORT, DnsPolicy, IpcacheEntry
from meshctl.state.atomic import atomic_write

log = logging.getLogger("meshctl.proxy.dns")
IP_TRANSPARENT = 19
IP_RECVORIGDSTADDR = 20
UPSTREAM_TIMEOUT_S = 2.0
RELOAD_S = 0.02  # how often the rules file is checked: an apply waits for the version
EXPIRY_S = 1.0


@dataclass
class Rules:
    """The rules file: DNS rules per endpoint and peer, the node's toFQDNs selectors."""

    version: str = ""
    # each rule with its names parsed once (a query is judged against them)
    policies: tuple[tuple[DnsPolicy, tuple[FqdnSelector, ...]], ...] = ()
    selectors: tuple[tuple[FqdnSelector, int], ...] = ()
    peers: dict[int, list[IPv4Network]] = field(default_factory=dict)

    @classmethod
    def read(cls, path: Path) -> Rules:
        doc = json.loads(path.read_text())
        if doc.get("format") != FORMAT:
            raise ValueError(f"{path}: not {FORMAT}")
        policies = [DnsPolicy.from_canonical(r) for r in doc["rules"]]
        return cls(str(doc["version"]), tuple((p, _selectors(p.names)) for p in policies),
                   tuple(zip(_selectors(doc["fqdn"]), map(int, doc["fqdn"].values()), strict=True)),
                   {int(i): [IPv4Network(p) for p in ps] for i, ps in doc["peers"].items()})

    def judge(self, client: str, server: str, port: int, name: str) -> tuple[bool, int | None]:
        """(allowed, the cookie of the rule that allows it, or of the first that applies)."""
        client_ip, server_ip = IPv4Address(client), IPv4Address(server)
        first: int | None = None
        for p, names in self.policies:
            if p.endpoint != client_ip or not p.port <= port <= p.last_port:
                continue
            if p.identity and not any(server_ip in net for net in self.peers.get(p.identity, ())):
                continue
            first = p.cookie if first is None else first
            if any(sel.matches(name) for sel in names):
                return True, p.cookie
        return False, first

    def identity_for(self, names: Iterable[str]) -> int | None:
        """The identity of the IPs answered for `names`: the selector's that matches. Several
        match: the lowest (a limit: an identity per selector set is not built yet)."""
        hits = sorted({i for sel, i in self.selectors for n in names if sel.matches(n)})
        return hits[0] if hits else None


def _selectors(texts: Iterable[str]) -> tuple[FqdnSelector, ...]:
    """Selector texts as the rules file writes them (a name, or a pattern with `*`)."""
    return tuple(FqdnSelector.of(match_pattern=t) for t in texts)


class Learned:
    """IP -> (identity, names, expiry), persisted atomically after every change. Callers hold
    `lock` across a change and its ipcache write: an IP learned again while it expires is never
    removed after it was written."""

    def __init__(self, path: Path, min_ttl: int) -> None:
        self.path, self.min_ttl = path, min_ttl
        self.lock = threading.Lock()
        try:
            self.ips: dict[str, dict[str, Any]] = json.loads(path.read_text())["ips"]
        except (OSError, ValueError, KeyError, TypeError):
            self.ips = {}

    def add(self, found: dict[str, tuple[int, str, int]]) -> None:
        """found: ip -> (identity, name, ttl)."""
        now = time.time()
        for ip, (identity, name, ttl) in found.items():
            rec = self.ips.setdefault(ip, {"identity": identity, "names": [], "expires": 0.0})
            rec["identity"] = identity
            if name not in rec["names"]:
                rec["names"] = sorted([*rec["names"], name])
            rec["expires"] = max(rec["expires"], now + max(ttl, self.min_ttl))
        self._save()

    def expired(self, grace: float) -> list[str]:
        now = time.time()
        return [ip for ip, rec in self.ips.items() if rec["expires"] + grace < now]

    def drop(self, ips: Iterable[str]) -> None:
        for ip in ips:
            self.ips.pop(ip, None)
        self._save()

    def _save(self) -> None:
        atomic_write(self.path, json.dumps({"ips": self.ips}, sort_keys=True).encode())


class Proxy:
    def __init__(self, files: DnsFiles, pins: Path, port: int, min_ttl: int, grace: float,
                 reject: str) -> None:
        self.files, self.pins, self.port, self.grace = files, pins, port, grace
        self.reject = RCODE.NXDOMAIN if reject == "nxdomain" else RCODE.REFUSED
        self.rules = Rules()
        self.rules_mark: tuple[int, int] | None = None
        self.learned = Learned(files.learned, min_ttl)
        self.answer_socks: dict[tuple[str, int], socket.socket] = {}
        self.lock = threading.Lock()
        self.log_lock = threading.Lock()
        self.pool = ThreadPoolExecutor(max_workers=16, thread_name_prefix="dns-query")

    # rules ----------------------------------------------------------------------------------

    def reload(self) -> None:
        try:
            st = self.files.rules.stat()
        except OSError:
            return
        mark = (st.st_ino, st.st_mtime_ns)
        if mark == self.rules_mark:
            return
        try:
            rules = Rules.read(self.files.rules)
        except (OSError, ValueError, KeyError, TypeError) as err:
            log.error("cannot read %s: %s", self.files.rules, err)
            return
        self.rules, self.rules_mark = rules, mark
        atomic_write(self.files.status, json.dumps({"version": rules.version, "pid": os.getpid()}).encode())

    # the datapath's sockets -----------------------------------------------------------------

    def listen(self) -> tuple[socket.socket, socket.socket]:
        udp = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
        tcp = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
        for sock in (udp, tcp):
            sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
            # a new proxy binds before the old one leaves
            sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEPORT, 1)
            sock.setsockopt(socket.SOL_IP, IP_TRANSPARENT, 1)
        udp.setsockopt(socket.SOL_IP, IP_RECVORIGDSTADDR, 1)
        udp.bind(("127.0.0.1", self.port))
        tcp.bind(("127.0.0.1", self.port))
        tcp.listen(128)
        return udp, tcp

    def answer_socket(self, source: tuple[str, int]) -> socket.socket:
        """A socket that sends as `source` (the resolver the pod asked): transparent, unconnected."""
        with self.lock:
            sock = self.answer_socks.get(source)
            if sock is None:
                sock = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
                sock.setsockopt(socket.SOL_IP, IP_TRANSPARENT, 1)
                sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
                sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEPORT, 1)
                sock.bind(source)
                self.answer_socks[source] = sock
            return sock

    def serve_udp(self, udp: socket.socket) -> None:
        while True:
            data, ancillary, _flags, client = udp.recvmsg(4096, socket.CMSG_SPACE(16))
            original = _original_destination(ancillary)
            if original is None:
                continue
            self.pool.submit(self._udp_query, data, client, original)

    def _udp_query(self, data: bytes, client: tuple[str, int], original: tuple[str, int]) -> None:
        out = self.handle(data, client, original, "udp")
        if out is not None:
            with contextlib.suppress(OSError):
                self.answer_socket(original).sendto(out, client)

    def serve_tcp(self, tcp: socket.socket) -> None:
        while True:
            conn, client = tcp.accept()
            threading.Thread(target=self._tcp_conn, args=(conn, client), daemon=True).start()

    def _tcp_conn(self, conn: socket.socket, client: tuple[str, int]) -> None:
        original = conn.getsockname()  # the datapath assigned the connection: the pod's resolver
        with conn:
            conn.settimeout(30)
            try:
                while (query := recv_message(conn)) is not None:
                    out = self.handle(query, client, original, "tcp")
                    if out is None:
                        return
                    send_message(conn, out)
            except OSError:
                return

    # one query ------------------------------------------------------------------------------

    def handle(self, data: bytes, client: tuple[str, int], server: tuple[str, int],
               proto: str) -> bytes | None:
        try:
            query = DNSRecord.parse(data)
        except DNSError:
            return None
        name = normalize(str(query.q.qname))
        qtype = QTYPE.get(query.q.qtype)
        allowed, cookie = self.rules.judge(client[0], server[0], server[1], name)
        record: dict[str, Any] = {"time": time.time(), "client": f"{client[0]}:{client[1]}",
                                  "server": f"{server[0]}:{server[1]}", "protocol": proto, "query": name,
                                  "qtype": qtype, "cookie": cookie}
        if not allowed:
            reply = query.reply()
            reply.header.rcode = self.reject
            self._log({**record, "verdict": "DENIED", "rcode": RCODE.get(self.reject)})
            return reply.pack()  # type: ignore[no-any-return]
        try:
            raw = _forward(data, server, proto)
            answer = DNSRecord.parse(raw)
        except (OSError, DNSError) as err:
            self._log({**record, "verdict": "ERROR", "error": str(err)})
            reply = query.reply()
            reply.header.rcode = RCODE.SERVFAIL
            return reply.pack()  # type: ignore[no-any-return]
        names = {name} | {normalize(str(rr.rdata)) for rr in answer.rr if rr.rtype == QTYPE.CNAME}
        ips = [(str(rr.rdata), rr.ttl) for rr in answer.rr if rr.rtype == QTYPE.A]
        learned = self.learn(name, names, ips)
        self._log({**record, "verdict": "FORWARDED", "rcode": RCODE.get(answer.header.rcode),
                   "answers": [ip for ip, _ in ips], "ttl": min((t for _, t in ips), default=None),
                   "learned": learned})
        return raw

    def learn(self, query: str, names: set[str], ips: list[tuple[str, int]]) -> dict[str, int]:
        """Write the answer's IPs that a selector selects (by the query's name or a CNAME of it)
        into the ipcache, then the learned file: both before the answer leaves (no first-packet
        drop)."""
        from meshctl.dataplane.maps import IpcacheMap

        identity = self.rules.identity_for(names)
        if identity is None or not ips:
            return {}
        found = {ip: (identity, query, ttl) for ip, ttl in ips}
        with self.learned.lock, IpcacheMap.from_dir(self.pins) as ipcache:
            ipcache.upsert({IPv4Network(f"{ip}/32"): IpcacheEntry(identity) for ip in found})
            self.learned.add(found)
        return {ip: identity for ip in found}

    def expire(self) -> None:
        """IPs past their TTL and grace that no tracked connection uses leave the ipcache."""
        from meshctl.dataplane.maps import CtMap, IpcacheMap

        with self.learned.lock:
            if not self.learned.expired(self.grace):
                return
        with CtMap.from_dir(self.pins) as ct:
            now_ns = time.monotonic_ns()  # the datapath's clock (bpf_ktime_get_ns)
            in_use = {str(ip) for e in ct.read() if e.expires_ns > now_ns for ip in (e.daddr, e.saddr)}
        with self.learned.lock:  # again under the lock: an answer may have renewed one meanwhile
            gone = [ip for ip in self.learned.expired(self.grace) if ip not in in_use]
            if gone:
                with IpcacheMap.from_dir(self.pins) as ipcache:
                    ipcache.remove([IPv4Network(f"{ip}/32") for ip in gone])
                self.learned.drop(gone)

    def _log(self, record: dict[str, Any]) -> None:
        line = json.dumps(record, sort_keys=True) + "\n"
        with self.log_lock, open(self.files.log, "a") as out:
            out.write(line)


def _original_destination(ancillary: list[tuple[int, int, bytes]]) -> tuple[str, int] | None:
    for level, kind, raw in ancillary:
        if (level, kind) == (socket.SOL_IP, IP_RECVORIGDSTADDR):
            port, addr = struct.unpack_from("!2xH4s", raw)
            return socket.inet_ntoa(addr), port
    return None


def _forward(data: bytes, server: tuple[str, int], proto: str) -> bytes:
    """The query to the resolver the pod asked, from the node's own address."""
    if proto == "tcp":
        with socket.create_connection(server, timeout=UPSTREAM_TIMEOUT_S) as conn:
            send_message(conn, data)
            body = recv_message(conn)
            if body is None:
                raise OSError("the resolver closed the connection")
            return body
    with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as up:
        up.settimeout(UPSTREAM_TIMEOUT_S)
        up.connect(server)
        up.send(data)
        return up.recv(65535)


def _loop(every: float, step: Any) -> None:
    while True:
        try:
            step()
        except Exception:  # a failed step is logged and tried again: the proxy stays up
            log.exception("dns proxy: %s failed", getattr(step, "__name__", step))
        time.sleep(every)


def main(argv: list[str] | None = None) -> None:
    ap = argparse.ArgumentParser(prog="meshctl.proxy.dns")
    ap.add_argument("--dir", type=Path, required=True, help="the node's DNS proxy directory")
    ap.add_argument("--pins", type=Path, required=True, help="the node's pinned maps")
    ap.add_argument("--port", type=int, default=DNS_PROXY_PORT)
    ap.add_argument("--min-ttl", type=int, default=0, help="seconds a learned IP stays at least")
    ap.add_argument("--grace", type=float, default=5.0, help="seconds past the TTL before an IP leaves")
    ap.add_argument("--reject", choices=("refused", "nxdomain"), default="refused")
    args = ap.parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(name)s %(message)s")
    signal.signal(signal.SIGTERM, lambda *_: sys.exit(0))
    files = DnsFiles(args.dir)
    files.dir.mkdir(parents=True, exist_ok=True)
    proxy = Proxy(files, args.pins, args.port, args.min_ttl, args.grace, args.reject)
    udp, tcp = proxy.listen()
    proxy.reload()
    atomic_write(files.pid, str(os.getpid()).encode())
    for target, arg in ((proxy.serve_udp, udp), (proxy.serve_tcp, tcp)):
        threading.Thread(target=target, args=(arg,), daemon=True).start()
    threading.Thread(target=_loop, args=(EXPIRY_S, proxy.expire), daemon=True).start()
    _loop(RELOAD_S, proxy.reload)


if __name__ == "__main__":
    main()
