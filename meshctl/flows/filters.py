"""hubble-observe-like flow filters, compiled to one SQL WHERE clause over the flow store.

Same flag repeated = OR, different flags = AND (as in `hubble observe`). --namespace, --pod,
--ip and --port match either end of the flow; --from-*/--to-* one end. Pods match by prefix, as
Hubble's do: `demo/api` matches `demo/api-7d9f-x2k9p`, `demo/` every pod of demo. Flags given
after `--not` form a second filter (Hubble's denylist): a flow that matches it is left out.
Names live in the store's small `peers` table (meshctl.flows.dims): a name filter becomes
`f.src_peer IN (SELECT id FROM peers WHERE ...)`, evaluated once per query, not once per flow.
Time is the primary key.
"""

from __future__ import annotations

import ipaddress
import re
import sqlite3
import time
from dataclasses import dataclass, field
from datetime import datetime
from functools import lru_cache

from meshctl.errors import MeshctlError
from meshctl.flows.flow import PROTOCOL_NUMBERS, VERDICT_NUMBERS
from meshctl.fqdnmatch import FqdnSelector, pattern_error

# The store's tables: the datapath's flows, the proxies' HTTP and DNS records (`--protocol http|dns`).
FLOWS, HTTP, DNS = "flows", "http", "dns"
L7_TABLES = (HTTP, DNS)
_STATUS = re.compile(r"^([1-5])(\d\d|\+)$|^([1-5]\d)\+$")
_DURATION = re.compile(r"^(\d+(?:\.\d+)?)(ms|s|m|h|d)$")
_UNIT_S = {"ms": 0.001, "s": 1, "m": 60, "h": 3600, "d": 86400}


class FilterError(MeshctlError):
    """A flow filter flag with a bad value."""


def parse_duration(text: str, flag: str = "duration") -> float:
    """`30s`, `5m`, `1.5h`, `24h`, `7d` -> seconds."""
    m = _DURATION.match(text.strip())
    if not m:
        raise FilterError(f"{flag}: {text!r} is not a duration like 30s, 5m, 24h")
    return float(m.group(1)) * _UNIT_S[m.group(2)]


def parse_int(text: str, flag: str, low: int, high: int, what: str) -> int:
    """A number flag given as text, so a bad value is one FilterError line (not a usage box)."""
    try:
        value = int(text.strip(), 10)
    except ValueError:
        raise FilterError(f"{flag}: {text!r} is not {what}") from None
    if not low <= value <= high:
        raise FilterError(f"{flag}: {value} is not {what}")
    return value


def parse_time(text: str, flag: str, now: float | None = None) -> int:
    """A duration ago (`5m`) or an absolute ISO/RFC3339 time -> wall-clock ns."""
    now = time.time() if now is None else now
    if _DURATION.match(text.strip()):
        return int((now - parse_duration(text, flag)) * 1e9)
    try:
        dt = datetime.fromisoformat(text.strip().replace("Z", "+00:00"))
    except ValueError:
        raise FilterError(
            f"{flag}: {text!r} is neither a duration (5m) nor a time (2024-12-09T10:23:45Z)") from None
    if dt.tzinfo is None:
        dt = dt.astimezone()
    return int(dt.timestamp() * 1e9)


def _label_patterns(label: str) -> str:
    """`app=x` matches `k8s:app=x` (any source prefix); `k8s:app=x` matches only itself."""
    label = label.strip()
    if not label:
        raise FilterError("label filter: empty label")
    if "=" not in label:
        label_key = label
        return f"%:{label_key}=%" if ":" not in label_key else f"%,{label_key}=%"
    key = label.split("=", 1)[0]
    return f"%,{label},%" if ":" in key else f"%:{label},%"


def _pod_clause(pod: str) -> tuple[str, list[object]]:
    """A prefix, as in Hubble: `ns/pod` (`ns/` = the whole namespace); without a namespace, a pod
    name prefix in any namespace. instr() rather than LIKE: no wildcard in a name is special."""
    pod = pod.strip()
    if "/" in pod:
        return "instr(pod, ?) = 1", [pod]
    return "instr(substr(pod, instr(pod, '/') + 1), ?) = 1 AND pod != ''", [pod]


def parse_ip(text: str, flag: str) -> str:
    """An IPv4 address or CIDR, normalised (`10.0.0.1/8` is refused: host bits set)."""
    try:
        net = ipaddress.ip_network(text.strip(), strict=True)
    except ValueError:
        raise FilterError(f"{flag}: {text!r} is not an IP address or CIDR (10.1.2.3, 10.1.0.0/16)") from None
    if net.version != 4:
        raise FilterError(f"{flag}: {text!r}: flows are IPv4 only")
    return str(net.network_address) if net.prefixlen == 32 else str(net)


@lru_cache(maxsize=4096)
def _in_cidr(ip: str, cidr: str) -> bool:
    try:
        return ipaddress.ip_address(ip) in ipaddress.ip_network(cidr)
    except ValueError:
        return False


@lru_cache(maxsize=256)
def _path_regex(pattern: str) -> re.Pattern[str]:
    return re.compile(pattern)


def _path_matches(pattern: str, url: str) -> bool:
    """Hubble's --http-path: the regex found in the URL's path (the query left out)."""
    return _path_regex(pattern).search(url.partition("?")[0]) is not None


def _status_range(text: str) -> tuple[int, int]:
    """`404`, `4+` (every 4xx) or `40+` (400-409), as Hubble's --http-status."""
    m = _STATUS.match(text.strip())
    if not m:
        raise FilterError(f"--http-status: {text!r} is not a status code or prefix (200, 4+, 50+)")
    t = text.strip()
    if not t.endswith("+"):
        return int(t), int(t)
    prefix = t[:-1]
    scale = 10 ** (3 - len(prefix))
    return int(prefix) * scale, (int(prefix) + 1) * scale - 1


@lru_cache(maxsize=256)
def _fqdn_selector(pattern: str) -> FqdnSelector:
    return FqdnSelector.of(match_pattern=pattern)


def _fqdn_matches(pattern: str, names: str) -> bool:
    """Hubble's --fqdn: one of the comma-separated names matches the pattern (Cilium's `*`)."""
    return bool(names) and any(_fqdn_selector(pattern).matches(n) for n in names.split(","))


def register_sql(db: sqlite3.Connection) -> None:
    """The SQL functions where() may use (CIDR, path and name matching); call on every connection
    that queries."""
    db.create_function("mc_in_cidr", 2, _in_cidr, deterministic=True)
    db.create_function("mc_path_matches", 2, _path_matches, deterministic=True)
    db.create_function("mc_fqdn_matches", 2, _fqdn_matches, deterministic=True)


def _ip_clause(value: str) -> tuple[str, list[object]]:
    if "/" in value:
        return "mc_in_cidr(ip, ?)", [value]
    return "ip = ?", [value]


def _peers_in(column: str, conds: list[tuple[str, list[object]]]) -> tuple[str, list[object]]:
    """`f.src_peer IN (SELECT id FROM peers WHERE c1 OR c2)`."""
    sql = " OR ".join(c for c, _ in conds)
    return f"f.{column} IN (SELECT id FROM peers WHERE {sql})", [p for _, ps in conds for p in ps]


@dataclass(frozen=True)
class FlowFilter:
    namespaces: tuple[str, ...] = ()
    pods: tuple[str, ...] = ()
    from_pods: tuple[str, ...] = ()
    to_pods: tuple[str, ...] = ()
    from_labels: tuple[str, ...] = ()
    to_labels: tuple[str, ...] = ()
    from_identities: tuple[int, ...] = ()
    to_identities: tuple[int, ...] = ()
    verdicts: tuple[str, ...] = ()
    protocols: tuple[str, ...] = ()
    ports: tuple[int, ...] = ()
    to_ports: tuple[int, ...] = ()
    since_ns: int | None = None
    until_ns: int | None = None
    from_namespaces: tuple[str, ...] = ()
    to_namespaces: tuple[str, ...] = ()
    ips: tuple[str, ...] = ()
    from_ips: tuple[str, ...] = ()
    to_ips: tuple[str, ...] = ()
    http_methods: tuple[str, ...] = ()
    http_paths: tuple[str, ...] = ()  # regexes found in the request's path
    http_statuses: tuple[str, ...] = ()  # `200`, `4+`
    fqdns: tuple[str, ...] = ()  # names (or `*` patterns) of either end, or the name a DNS record asks
    from_fqdns: tuple[str, ...] = ()
    to_fqdns: tuple[str, ...] = ()
    excluded: FlowFilter | None = field(default=None)  # `--not FLAG`: flows matching it are left out

    def __post_init__(self) -> None:
        for v in self.verdicts:
            if v.upper() not in VERDICT_NUMBERS:
                raise FilterError(f"--verdict: {v!r} is not {', '.join(VERDICT_NUMBERS)}")
        for p in self.protocols:
            if p.lower() not in PROTOCOL_NUMBERS and p.lower() not in L7_TABLES:
                raise FilterError(f"--protocol: {p!r} is not tcp, udp, icmp, http or dns")
        for flag, patterns in (("--fqdn", self.fqdns), ("--from-fqdn", self.from_fqdns),
                               ("--to-fqdn", self.to_fqdns)):
            for pattern in patterns:
                problem = pattern_error(pattern)
                if problem:
                    raise FilterError(f"{flag}: {pattern!r}: {problem}")
        for m in self.http_methods:
            if not m.strip().isalpha():
                raise FilterError(f"--http-method: {m!r} is not an HTTP method (GET, POST, ...)")
        for path in self.http_paths:
            try:
                re.compile(path)
            except re.error as err:
                raise FilterError(f"--http-path: {path!r} is not a regular expression: {err}") from None
        for status in self.http_statuses:
            _status_range(status)
        for flag, ports in (("--port", self.ports), ("--to-port", self.to_ports)):
            for port in ports:
                if not 0 <= port <= 65535:
                    raise FilterError(f"{flag}: {port} is not a port number (0-65535)")
        for flag, ids in (("--from-identity", self.from_identities), ("--to-identity", self.to_identities)):
            for i in ids:
                if not 0 <= i < 1 << 32:
                    raise FilterError(f"{flag}: {i} is not a numeric identity (0 to 2^32-1)")
        for flag, pods in (("--pod", self.pods), ("--from-pod", self.from_pods), ("--to-pod", self.to_pods)):
            for pod in pods:
                if not pod.strip() or pod.strip().startswith("/") or pod.count("/") > 1:
                    raise FilterError(f"{flag}: {pod!r} is not [namespace/]pod")
        for flag, labels in (("--from-label", self.from_labels), ("--to-label", self.to_labels)):
            for lab in labels:
                if not lab.strip() or lab.strip().startswith("="):
                    raise FilterError(f"{flag}: {lab!r} is not a label (key=value or k8s:key=value)")
        for flag, names in (("--namespace", self.namespaces), ("--from-namespace", self.from_namespaces),
                            ("--to-namespace", self.to_namespaces)):
            for ns in names:
                if not ns.strip() or "/" in ns:
                    raise FilterError(f"{flag}: {ns!r} is not a namespace name")
        for flag, ips in (("--ip", self.ips), ("--from-ip", self.from_ips), ("--to-ip", self.to_ips)):
            for ip in ips:
                parse_ip(ip, flag)
        if self.since_ns is not None and self.until_ns is not None and self.since_ns > self.until_ns:
            raise FilterError("--since is after --until: no flow can match")

    def matches_table(self, table: str) -> bool:
        """Whether rows of `table` can match: HTTP fields only HTTP records; `--protocol` names
        tables (http, dns) or L4 protocols (every table)."""
        if (self.http_methods or self.http_paths or self.http_statuses) and table != HTTP:
            return False
        protocols = {p.lower() for p in self.protocols}
        return not protocols or table in protocols or bool(protocols - set(L7_TABLES))

    def where(self, table: str = FLOWS) -> tuple[str, list[object]]:
        """SQL condition over `flows f`, `http f` or `dns f` (never empty: "1" when nothing
        filters, "0" when no row of that table can match) and its parameters."""
        if not self.matches_table(table):
            return "0", []
        clauses: list[str] = []
        params: list[object] = []

        def add(sql: str, ps: list[object]) -> None:
            clauses.append(sql)
            params.extend(ps)

        def peer_filter(conds: list[tuple[str, list[object]]], ends: tuple[str, ...]) -> None:
            if conds:
                parts = [_peers_in(end, conds) for end in ends]
                add("(" + " OR ".join(p for p, _ in parts) + ")", [x for _, ps in parts for x in ps])

        def any_of(parts: list[tuple[str, list[object]]]) -> None:
            if parts:
                add("(" + " OR ".join(p for p, _ in parts) + ")", [x for _, ps in parts for x in ps])

        both = ("src_peer", "dst_peer")
        peer_filter([("ns = ?", [ns]) for ns in self.namespaces], both)
        peer_filter([("ns = ?", [ns]) for ns in self.from_namespaces], ("src_peer",))
        peer_filter([("ns = ?", [ns]) for ns in self.to_namespaces], ("dst_peer",))
        peer_filter([_ip_clause(parse_ip(ip, "--ip")) for ip in self.ips], both)
        peer_filter([_ip_clause(parse_ip(ip, "--from-ip")) for ip in self.from_ips], ("src_peer",))
        peer_filter([_ip_clause(parse_ip(ip, "--to-ip")) for ip in self.to_ips], ("dst_peer",))
        peer_filter([_pod_clause(p) for p in self.pods], both)
        peer_filter([_pod_clause(p) for p in self.from_pods], ("src_peer",))
        peer_filter([_pod_clause(p) for p in self.to_pods], ("dst_peer",))
        peer_filter([("labels LIKE ?", [_label_patterns(lab)]) for lab in self.from_labels], ("src_peer",))
        peer_filter([("labels LIKE ?", [_label_patterns(lab)]) for lab in self.to_labels], ("dst_peer",))
        peer_filter([("identity = ?", [i]) for i in self.from_identities], ("src_peer",))
        peer_filter([("identity = ?", [i]) for i in self.to_identities], ("dst_peer",))
        any_of([("f.verdict = ?", [VERDICT_NUMBERS[v.upper()]]) for v in self.verdicts])
        any_of([("1", []) if p.lower() in L7_TABLES else ("f.protocol = ?", [PROTOCOL_NUMBERS[p.lower()]])
                for p in self.protocols if p.lower() not in L7_TABLES or p.lower() == table])
        for patterns, ends in ((self.fqdns, both), (self.from_fqdns, ("src_peer",)),
                               (self.to_fqdns, ("dst_peer",))):
            if patterns:  # a DNS record is about the name it asks: --fqdn and --to-fqdn match it too
                names = [("mc_fqdn_matches(?, names)", [p]) for p in patterns]
                parts = [_peers_in(end, names) for end in ends]
                if table == DNS and ends != ("src_peer",):
                    parts += [("mc_fqdn_matches(?, f.query)", [p]) for p in patterns]
                any_of(parts)
        any_of([("f.method = ?", [m.strip().upper()]) for m in self.http_methods])
        any_of([("mc_path_matches(?, f.url)", [path]) for path in self.http_paths])
        any_of([("f.status BETWEEN ? AND ?", list(_status_range(st))) for st in self.http_statuses])
        any_of([(f"f.{c} = ?", [p]) for p in self.ports for c in ("src_port", "dst_port")])
        any_of([("f.dst_port = ?", [p]) for p in self.to_ports])
        if self.since_ns is not None:
            add("f.time_ns >= ?", [self.since_ns])
        if self.until_ns is not None:
            add("f.time_ns <= ?", [self.until_ns])
        if self.excluded is not None:
            sql, ps = self.excluded.where(table)
            if sql != "1" and sql != "0":  # an empty denylist leaves nothing out, nor one for the other table
                add(f"NOT ({sql})", ps)
        return (" AND ".join(clauses) or "1"), params


def build_filter(values: dict[str, list[str]] | dict[str, list[str] | None], since: str | None,
                 until: str | None, excluded: FlowFilter | None = None) -> FlowFilter:
    """One FlowFilter from flag values (text, so bad numbers are one clear error line)."""
    port_word, id_word = "a port number (0-65535)", "a numeric identity (0 to 2^32-1)"
    numeric = {"from_identities": ("--from-identity", 2**32 - 1, id_word),
               "to_identities": ("--to-identity", 2**32 - 1, id_word),
               "ports": ("--port", 65535, port_word), "to_ports": ("--to-port", 65535, port_word)}
    fields: dict[str, object] = {}
    for name, given in values.items():
        vals = given or []
        if name in numeric:
            flag, high, word = numeric[name]
            fields[name] = tuple(parse_int(v, flag, 0, high, word) for v in vals)
        else:
            fields[name] = tuple(vals)
    return FlowFilter(
        **fields,  # type: ignore[arg-type]
        since_ns=parse_time(since, "--since") if since else None,
        until_ns=parse_time(until, "--until") if until else None,
        excluded=excluded,
    )
