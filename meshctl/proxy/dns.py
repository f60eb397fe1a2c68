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
import secrets
import selectors
import signal
import socket
import struct
import threading
import time
from collections.abc import Iterable
from dataclasses import dataclass, field
from functools import cached_property, lru_cache
from ipaddress import IPv4Address, IPv4Network
from pathlib import Path
from typing import TYPE_CHECKING, Any

from dnslib import QTYPE, RCODE, DNSError, DNSRecord

from meshctl.dataplane.dnsproxy import FORMAT, DnsFiles
from meshctl.dnswire import recv_message, send_message
from meshctl.fqdnmatch import FqdnSelector, normalize
from meshctl.nodestate import (
    CIDR_IDENTITY_MIN,
    DNS_MIN_TTL,
    DNS_NXDOMAIN,
    DNS_PROXY_PORT,
    DnsPolicy,
    FqdnTable,
    IpcacheEntry,
    fqdn_set_key,
)
from meshctl.state.atomic import atomic_write

if TYPE_CHECKING:
    from meshctl.dataplane.maps import IpcacheMap

log = logging.getLogger("meshctl.proxy.dns")
IP_TRANSPARENT = 19
IP_RECVORIGDSTADDR = 20
UPSTREAM_TIMEOUT_S = 2.0
RELOAD_S = 0.02  # how often the rules file is checked: an apply waits for the version
EXPIRY_S = 1.0
BATCH = 64  # datagrams read per wakeup before the other socket gets its turn
LEAVE_CHECK_S = 0.2  # how soon a SIGTERM'd proxy starts leaving its sockets to the next one


@dataclass
class Rules:
    """The rules file: DNS rules per endpoint and peer, the node's toFQDNs selectors."""

    version: str = ""
    # each rule with its names parsed once (a query is judged against them)
    policies: tuple[tuple[DnsPolicy, tuple[FqdnSelector, ...]], ...] = ()
    selectors: tuple[tuple[FqdnSelector, int], ...] = ()
    sets: dict[frozenset[str], int] = field(default_factory=dict)  # overlapping selectors' identities
    # selector (or set) key -> (CIDR prefix of the node, identity of its IPs there), longest first
    in_cidr: dict[str, tuple[tuple[IPv4Network, int], ...]] = field(default_factory=dict)
    owned: frozenset[str] = frozenset()  # the node's toCIDR /32 addresses: never learned over
    min_ttl: int = 0  # meshctl.toml [dns] minTTL
    nxdomain: bool = False  # [dns] rejectResponseCode = "nameError"
    peers: dict[int, list[IPv4Network]] = field(default_factory=dict)
    verdicts: dict[tuple[str, str, int, str], tuple[bool, int | None]] = field(default_factory=dict)

    @classmethod
    def read(cls, path: Path) -> Rules:
        doc = json.loads(path.read_text())
        if doc.get("format") != FORMAT:
            raise ValueError(f"{path}: not {FORMAT}")
        policies = [DnsPolicy.from_canonical(r) for r in doc["rules"]]
        table = FqdnTable.of(doc["fqdn"])
        return cls(str(doc["version"]), tuple((p, _selectors(p.names)) for p in policies),
                   tuple(zip(_selectors(table.selectors), table.selectors.values(), strict=True)), table.sets,
                   table.in_cidr, frozenset(map(str, doc.get("owned", ()))),
                   table.settings.get(DNS_MIN_TTL, 0), bool(table.settings.get(DNS_NXDOMAIN)),
                   {int(i): [IPv4Network(p) for p in ps] for i, ps in doc["peers"].items()})

    def judge(self, client: str, server: str, port: int, name: str) -> tuple[bool, int | None]:
        """(allowed, the cookie of the rule that allows it, or of the first that applies);
        remembered per query shape for as long as these rules run."""
        key = (client, server, port, name)
        verdict = self.verdicts.get(key)
        if verdict is None:
            if len(self.verdicts) >= 65536:
                self.verdicts.clear()
            verdict = self.verdicts[key] = self._judge(client, server, port, name)
        return verdict

    def _judge(self, client: str, server: str, port: int, name: str) -> tuple[bool, int | None]:
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

    def selection(self, names: Iterable[str]) -> tuple[str, int] | None:
        """The selectors that select the IPs answered for `names` (the query's and its CNAMEs'),
        as (text, identity): the selector that matches, or the set of those that match (the
        compiler made an identity per set of overlapping selectors). A set it did not foresee
        (a CNAME into another selector's names) takes its largest known part, then the lowest id."""
        names = tuple(names)
        hits = {sel.text: i for sel, i in self.selectors if any(sel.matches(n) for n in names)}
        if len(hits) <= 1:
            return next(iter(hits.items()), None)
        matched = frozenset(hits)
        if matched not in self.sets:
            parts = [(len(members), -i, members) for members, i in self.sets.items() if members <= matched]
            if not parts:
                text = min(hits, key=hits.__getitem__)
                return text, hits[text]
            matched = max(parts, key=lambda p: p[:2])[2]
        return fqdn_set_key(matched), self.sets[matched]

    def identity_of(self, ip: str, selection: tuple[str, int]) -> int:
        """An answered IP's identity: its selection's, or inside one of the node's CIDR prefixes
        the identity of both (so the CIDR rules keep allowing it)."""
        prefixes = self.in_cidr.get(selection[0])
        if prefixes:
            address = IPv4Address(ip)
            for prefix, identity in prefixes:
                if address in prefix:
                    return identity
        return selection[1]

    def taken(self, ip: str, entry: IpcacheEntry | None) -> bool:
        """Whether the ipcache entry an address finds (its longest prefix) is the address's own
        and not a learned one: a pod's or a node's (their identities), or a toCIDR /32."""
        if entry is None or entry.identity in self.fqdn_ids:
            return False
        return entry.identity < CIDR_IDENTITY_MIN or ip in self.owned

    @cached_property
    def fqdn_ids(self) -> frozenset[int]:
        return frozenset((*(i for _, i in self.selectors), *self.sets.values(),
                          *(i for prefixes in self.in_cidr.values() for _, i in prefixes)))


def _selectors(texts: Iterable[str]) -> tuple[FqdnSelector, ...]:
    """Selector texts as the rules file writes them (a name, or a pattern with `*`)."""
    return tuple(FqdnSelector.of(match_pattern=t) for t in texts)


class Learned:
    """IP -> (identity, names, expiry), persisted atomically. A new IP (or a new identity or name
    of one) is saved before its answer leaves, so a restarted proxy or agent keeps it; a longer
    expiry alone is saved by the next `flush` (at most a second later). Callers hold `lock`
    across a change and its ipcache write: an IP learned again while it expires is never removed
    after it was written."""

    def __init__(self, path: Path, min_ttl: int) -> None:
        self.path, self.min_ttl = path, min_ttl
        self.lock = threading.Lock()
        self.dirty = False
        try:
            self.ips: dict[str, dict[str, Any]] = json.loads(path.read_text())["ips"]
        except (OSError, ValueError, KeyError, TypeError):
            self.ips = {}

    def fresh(self, found: dict[str, tuple[int, str, int]]) -> list[str]:
        """The IPs of `found` (ip -> (identity, name, ttl)) not yet learned with that identity:
        the ipcache writes an answer costs."""
        return [ip for ip, (identity, _, _) in found.items()
                if self.ips.get(ip, {}).get("identity") != identity]

    def add(self, found: dict[str, tuple[int, str, int]]) -> None:
        """found: ip -> (identity, name, ttl)."""
        now = time.time()
        changed = bool(self.fresh(found))
        for ip, (identity, name, ttl) in found.items():
            rec = self.ips.setdefault(ip, {"identity": identity, "names": [], "expires": 0.0})
            rec["identity"] = identity
            if name not in rec["names"]:
                rec["names"] = sorted([*rec["names"], name])
                changed = True
            rec["expires"] = max(rec["expires"], now + max(ttl, self.min_ttl))
        if changed:
            self._save()
        else:
            self.dirty = True

    def expired(self, grace: float) -> list[str]:
        now = time.time()
        return [ip for ip, rec in self.ips.items() if rec["expires"] + grace < now]

    def drop(self, ips: Iterable[str]) -> None:
        for ip in ips:
            self.ips.pop(ip, None)
        self._save()

    def flush(self) -> None:
        if self.dirty:
            self._save()

    def _save(self) -> None:
        self.dirty = False
        atomic_write(self.path, json.dumps({"ips": self.ips}, sort_keys=True).encode())


@dataclass
class Pending:
    """A forwarded query waiting for the resolver's answer."""

    client: tuple[str, int]
    server: tuple[str, int]
    query_id: bytes  # the pod's id (the resolver saw ours)
    question: Question
    record: dict[str, Any]
    sent: float


class Proxy:
    """UDP on one thread, with one event loop: queries in, forwarded with ids of our own, answers
    matched back by id (no thread, socket or parse per query beyond the answer's); TCP with a
    thread per connection."""

    def __init__(self, files: DnsFiles, pins: Path, port: int, min_ttl: int, grace: float,
                 reject: str) -> None:
        self.files, self.pins, self.port, self.grace = files, pins, port, grace
        self.flags = (min_ttl, reject == "nxdomain")  # the settings' floor; meshctl.toml [dns] adds
        self.reject = RCODE.NXDOMAIN if self.flags[1] else RCODE.REFUSED
        self.rules = Rules()
        self.rules_mark: tuple[int, int] | None = None
        self.learned = Learned(files.learned, min_ttl)
        self.answer_socks: dict[tuple[str, int], socket.socket] = {}
        self.pending: dict[int, Pending] = {}
        self.lock = threading.Lock()
        self._ipcache: tuple[int, IpcacheMap] | None = None  # (pin inode, the open map)
        self._log_fd = os.open(files.log, os.O_WRONLY | os.O_APPEND | os.O_CREAT, 0o600)
        # SIGTERM: leave the sockets to a new proxy bound next to this one (SO_REUSEPORT), answer
        # what is queued and pending, then end (`done`)
        self.leaving, self.done = threading.Event(), threading.Event()

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
        self.learned.min_ttl = max(self.flags[0], rules.min_ttl)
        self.reject = RCODE.NXDOMAIN if self.flags[1] or rules.nxdomain else RCODE.REFUSED
        atomic_write(self.files.status, json.dumps({"version": rules.version, "pid": os.getpid()}).encode())

    def tick(self) -> None:
        """The main loop's turn: new rules, then a clean request."""
        self.reload()
        self.clean()

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
        udp.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 4 << 20)
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
        """Queries from the datapath and answers from resolvers, until the process ends."""
        upstream = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)  # from the node's own address
        upstream.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 4 << 20)
        upstream.bind(("0.0.0.0", 0))
        for sock in (udp, upstream):
            sock.setblocking(False)
        sel = selectors.DefaultSelector()
        sel.register(udp, selectors.EVENT_READ, self._udp_queries)
        sel.register(upstream, selectors.EVENT_READ, self._udp_answers)
        next_sweep = time.monotonic() + UPSTREAM_TIMEOUT_S / 4
        left_at = 0.0
        while not left_at or (self.pending and time.monotonic() < left_at + UPSTREAM_TIMEOUT_S):
            if self.leaving.is_set() and not left_at:
                while self._udp_queries(udp, upstream):  # what the kernel queued for this socket
                    pass
                sel.unregister(udp)
                udp.close()  # out of the reuseport group: new queries reach the new proxy
                left_at = time.monotonic()
            for key, _ in sel.select(LEAVE_CHECK_S):
                try:
                    key.data(key.fileobj, upstream)
                except Exception:  # one bad datagram must not stop the proxy
                    log.exception("dns proxy: udp")
            if time.monotonic() >= next_sweep:
                self._sweep()
                next_sweep = time.monotonic() + UPSTREAM_TIMEOUT_S / 4
        self.done.set()

    def _udp_queries(self, udp: socket.socket, upstream: socket.socket) -> int:
        """Up to BATCH queued queries judged and answered or forwarded; how many were read."""
        for n in range(BATCH):
            try:
                data, ancillary, _flags, client = udp.recvmsg(4096, socket.CMSG_SPACE(16))
            except BlockingIOError:
                return n
            original = _original_destination(ancillary)
            question = Question.of(data)
            if original is None or question is None:
                continue
            judged = self.judge(data, question, client, original, "udp")
            if isinstance(judged, bytes):
                self._send(judged, original, client)
                continue
            query_id = self._new_id()
            self.pending[query_id] = Pending(client, original, data[:2], question, judged, time.monotonic())
            with contextlib.suppress(OSError):
                upstream.sendto(struct.pack("!H", query_id) + data[2:], original)
        return BATCH

    def _udp_answers(self, upstream: socket.socket, _udp: socket.socket) -> None:
        for _ in range(BATCH):
            try:
                raw, server = upstream.recvfrom(65535)
            except BlockingIOError:
                return
            if len(raw) < 12:
                continue
            wait = self.pending.get(struct.unpack_from("!H", raw)[0])
            if wait is None or server != wait.server:
                continue  # late, or not from the resolver asked: dropped
            del self.pending[struct.unpack_from("!H", raw)[0]]
            out = self.answered(raw, wait.question, wait.record)
            if out is not None:
                self._send(wait.query_id + out[2:], wait.server, wait.client)

    def _new_id(self) -> int:
        while True:
            query_id = secrets.randbits(16)
            if query_id not in self.pending:
                return query_id

    def _sweep(self) -> None:
        """Queries the resolver did not answer in time: SERVFAIL to the pod."""
        late = time.monotonic() - UPSTREAM_TIMEOUT_S
        for query_id, wait in list(self.pending.items()):
            if wait.sent < late:
                del self.pending[query_id]
                self._log({**wait.record, "verdict": "ERROR", "error": "the resolver did not answer"})
                self._send(wait.query_id + wait.question.reply(RCODE.SERVFAIL)[2:], wait.server, wait.client)

    def _send(self, data: bytes, source: tuple[str, int], client: tuple[str, int]) -> None:
        with contextlib.suppress(OSError):
            self.answer_socket(source).sendto(data, client)

    def serve_tcp(self, tcp: socket.socket) -> None:
        tcp.settimeout(LEAVE_CHECK_S)
        while not self.leaving.is_set():
            try:
                conn, client = tcp.accept()
            except TimeoutError:
                continue
            conn.settimeout(None)
            threading.Thread(target=self._tcp_conn, args=(conn, client), daemon=True).start()
        tcp.close()

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
        """One query, start to end (TCP): the answer for the pod, None for no answer."""
        question = Question.of(data)
        if question is None:
            return None
        judged = self.judge(data, question, client, server, proto)
        if isinstance(judged, bytes):
            return judged
        try:
            raw = _forward_tcp(data, server)
        except OSError as err:
            self._log({**judged, "verdict": "ERROR", "error": str(err)})
            return data[:2] + question.reply(RCODE.SERVFAIL)[2:]
        return self.answered(raw, question, judged)

    def judge(self, data: bytes, question: Question, client: tuple[str, int], server: tuple[str, int],
              proto: str) -> bytes | dict[str, Any]:
        """The reply for a query no rule allows (logged), or the log record of one to forward."""
        allowed, cookie = self.rules.judge(client[0], server[0], server[1], question.name)
        record: dict[str, Any] = {"time": time.time(), "client": f"{client[0]}:{client[1]}",
                                  "server": f"{server[0]}:{server[1]}", "protocol": proto,
                                  "query": question.name, "qtype": question.qtype, "cookie": cookie}
        if allowed:
            return record
        self._log({**record, "verdict": "DENIED", "rcode": RCODE.get(self.reject)})
        return data[:2] + question.reply(self.reject)[2:]

    def answered(self, raw: bytes, question: Question, record: dict[str, Any]) -> bytes | None:
        """The resolver's answer: its IPs learned, then logged; returned for the pod."""
        answer = Answer.of(raw)
        if answer is None:
            self._log({**record, "verdict": "ERROR", "error": "the resolver's answer is not DNS"})
            return None
        learned = self.learn(question.name, answer.names | {question.name}, answer.ips)
        self._log({**record, "verdict": "FORWARDED", "rcode": answer.rcode,
                   "answers": [ip for ip, _ in answer.ips],
                   "ttl": min((t for _, t in answer.ips), default=None),
                   "learned": learned, "latency_us": int((time.time() - record["time"]) * 1e6)})
        return raw

    def learn(self, query: str, names: frozenset[str] | set[str], ips: tuple[tuple[str, int], ...]
              ) -> dict[str, int]:
        """Write the answer's IPs that a selector selects (by the query's name or a CNAME of it)
        into the ipcache, then the learned file: both before the answer leaves (no first-packet
        drop). An IP already learned with the same identity costs no write."""
        selection = self.rules.selection(names)
        if selection is None or not ips:
            return {}
        found = {ip: (self.rules.identity_of(ip, selection), query, ttl) for ip, ttl in ips}
        with self.learned.lock:
            for ip in [ip for ip in found if ip not in self.learned.ips]:
                if self.rules.taken(ip, self.ipcache().get(_host(ip))):  # a pod's, a node's, a toCIDR /32
                    del found[ip]
            fresh = self.learned.fresh(found)
            if fresh:
                self.ipcache().upsert({_host(ip): IpcacheEntry(found[ip][0]) for ip in fresh})
            if found:
                self.learned.add(found)
        return {ip: identity for ip, (identity, _, _) in found.items()}

    def forget(self, ips: list[str]) -> None:
        """Learned IPs leave the ipcache (caller holds the learning lock): only entries still
        ours, so an address a pod (or the apply) took meanwhile keeps its entry."""
        ipcache = self.ipcache()
        ours = [ip for ip in ips if (entry := ipcache.get(_host(ip))) is not None
                and entry.identity == self.learned.ips[ip]["identity"]]
        ipcache.remove([_host(ip) for ip in ours])
        self.learned.drop(ips)

    def ipcache(self) -> IpcacheMap:
        """The node's ipcache, opened again when its pin was replaced (a datapath reload)."""
        from meshctl.dataplane.maps import IpcacheMap

        ino = os.stat(self.pins / IpcacheMap.map_name).st_ino
        if self._ipcache is None or self._ipcache[0] != ino:
            if self._ipcache is not None:
                self._ipcache[1].close()
            self._ipcache = (ino, IpcacheMap.from_dir(self.pins))
        return self._ipcache[1]

    def clean(self) -> None:
        """A `meshctl fqdn cache clean` request: the learned IPs of matching names leave."""
        try:
            request = json.loads(self.files.clean.read_text())
            pattern = str(request.get("pattern") or "")
        except FileNotFoundError:
            return
        except (OSError, ValueError, AttributeError) as err:
            log.error("bad clean request %s: %s", self.files.clean, err)
            self.files.clean.unlink(missing_ok=True)
            return
        selector = FqdnSelector.of(match_pattern=pattern) if pattern else None
        with self.learned.lock:
            gone = [ip for ip, rec in self.learned.ips.items()
                    if selector is None or any(selector.matches(n) for n in rec["names"])]
            if gone:
                self.forget(gone)
        answer = {"id": request.get("id"), "removed": sorted(gone)}
        atomic_write(self.files.cleaned, json.dumps(answer).encode())
        self.files.clean.unlink(missing_ok=True)
        log.info("fqdn cache clean %r: %d IP(s) removed", pattern or "*", len(gone))

    def expire(self) -> None:
        """IPs past their TTL and grace that no tracked connection uses leave the ipcache."""
        from meshctl.dataplane.maps import CtMap

        with self.learned.lock:
            self.learned.flush()
            if not self.learned.expired(self.grace):
                return
        with CtMap.from_dir(self.pins) as ct:
            now_ns = time.monotonic_ns()  # the datapath's clock (bpf_ktime_get_ns)
            in_use = {str(ip) for e in ct.read() if e.expires_ns > now_ns for ip in (e.daddr, e.saddr)}
        with self.learned.lock:  # again under the lock: an answer may have renewed one meanwhile
            gone = [ip for ip in self.learned.expired(self.grace) if ip not in in_use]
            if gone:
                self.forget(gone)

    def _log(self, record: dict[str, Any]) -> None:
        """One line, one write (O_APPEND): the agent never reads half a record it cannot finish."""
        os.write(self._log_fd, (json.dumps(record, sort_keys=True) + "\n").encode())


@dataclass(frozen=True)
class Question:
    """A query's question, parsed once per distinct query (cached by its bytes after the id)."""

    name: str
    qtype: str
    record: DNSRecord

    @classmethod
    def of(cls, data: bytes) -> Question | None:
        return _question(data[2:]) if len(data) >= 12 else None

    def reply(self, rcode: int) -> bytes:
        reply = self.record.reply()
        reply.header.rcode = rcode
        return reply.pack()  # type: ignore[no-any-return]


@dataclass(frozen=True)
class Answer:
    """What an answer says: its rcode, A records (ip, ttl) and CNAME targets."""

    rcode: str
    ips: tuple[tuple[str, int], ...]
    names: frozenset[str]

    @classmethod
    def of(cls, raw: bytes) -> Answer | None:
        return _answer(raw[2:]) if len(raw) >= 12 else None


def _parse(body: bytes) -> DNSRecord | None:
    """A message without its first two bytes (the id: cached shapes ignore it)."""
    try:
        return DNSRecord.parse(b"\0\0" + body)
    except DNSError:
        return None


@lru_cache(maxsize=4096)
def _question(body: bytes) -> Question | None:
    record = _parse(body)
    if record is None or not record.questions:
        return None
    return Question(normalize(str(record.q.qname)), QTYPE.get(record.q.qtype), record)


@lru_cache(maxsize=4096)
def _answer(body: bytes) -> Answer | None:
    record = _parse(body)
    if record is None:
        return None
    return Answer(RCODE.get(record.header.rcode),
                  tuple((str(rr.rdata), rr.ttl) for rr in record.rr if rr.rtype == QTYPE.A),
                  frozenset(normalize(str(rr.rdata)) for rr in record.rr if rr.rtype == QTYPE.CNAME))


def _host(ip: str) -> IPv4Network:
    return IPv4Network(f"{ip}/32")


def _original_destination(ancillary: list[tuple[int, int, bytes]]) -> tuple[str, int] | None:
    for level, kind, raw in ancillary:
        if (level, kind) == (socket.SOL_IP, IP_RECVORIGDSTADDR):
            port, addr = struct.unpack_from("!2xH4s", raw)
            return socket.inet_ntoa(addr), port
    return None


def _forward_tcp(data: bytes, server: tuple[str, int]) -> bytes:
    """A TCP query to the resolver the pod asked, from the node's own address."""
    with socket.create_connection(server, timeout=UPSTREAM_TIMEOUT_S) as conn:
        send_message(conn, data)
        body = recv_message(conn)
        if body is None:
            raise OSError("the resolver closed the connection")
        return body


def _loop(every: float, step: Any, done: threading.Event) -> None:
    while not done.is_set():
        try:
            step()
        except Exception:  # a failed step is logged and tried again: the proxy stays up
            log.exception("dns proxy: %s failed", getattr(step, "__name__", step))
        done.wait(every)


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
    files = DnsFiles(args.dir)
    files.dir.mkdir(parents=True, exist_ok=True)
    proxy = Proxy(files, args.pins, args.port, args.min_ttl, args.grace, args.reject)
    signal.signal(signal.SIGTERM, lambda *_: proxy.leaving.set())
    udp, tcp = proxy.listen()
    proxy.reload()
    atomic_write(files.pid, str(os.getpid()).encode())
    for target, arg in ((proxy.serve_udp, udp), (proxy.serve_tcp, tcp)):
        threading.Thread(target=target, args=(arg,), daemon=True).start()
    threading.Thread(target=_loop, args=(EXPIRY_S, proxy.expire, proxy.done), daemon=True).start()
    _loop(RELOAD_S, proxy.tick, proxy.done)
    with proxy.learned.lock:
        proxy.learned.flush()


if __name__ == "__main__":
    main()
