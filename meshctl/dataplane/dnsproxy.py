"""The node's DNS proxy as live state: its rules file, its status, the IPs it learned.

One directory per node (next to Envoy's): `rules.json` (what reconcile hands the proxy, replaced
atomically; the proxy reloads it when it changes and reports the version it runs in
`status.json`), and `learned.json` (the IPs the proxy learned from answers, with their
identities and expiry: runtime state, kept across restarts, written by the proxy alone).
Observe reads the rules file back as the node's DNS rules, and leaves the learned IPs out of
the ipcache it reports: they are not intent, so never drift (a hand-made entry still is).
"""

from __future__ import annotations

import hashlib
import json
import time
import uuid
from collections.abc import Mapping
from dataclasses import dataclass
from ipaddress import IPv4Network
from pathlib import Path
from typing import Any

from meshctl.dataplane.envoy import ProxyFiles
from meshctl.errors import MeshctlError
from meshctl.localproc import pid_in_file
from meshctl.nodestate import CIDR_IDENTITY_MIN, DnsPolicy, FrozenMap, IpcacheEntry
from meshctl.state.atomic import atomic_write

FORMAT = "meshctl-dns-rules/1"


@dataclass(frozen=True)
class DnsFiles:
    """One node's DNS proxy directory."""

    dir: Path

    @classmethod
    def of(cls, cluster: str, node: str) -> DnsFiles:
        return cls(ProxyFiles.of(cluster, node).dir / "dns")

    @property
    def rules(self) -> Path:
        return self.dir / "rules.json"

    @property
    def status(self) -> Path:
        return self.dir / "status.json"

    @property
    def learned(self) -> Path:
        return self.dir / "learned.json"

    @property
    def log(self) -> Path:
        return self.dir / "queries.log"

    @property
    def pid(self) -> Path:
        return self.dir / "proxy.pid"

    @property
    def clean(self) -> Path:
        """A request to forget learned IPs (`meshctl fqdn cache clean`), taken by the proxy."""
        return self.dir / "clean.json"

    @property
    def cleaned(self) -> Path:
        """The proxy's answer to the last clean request."""
        return self.dir / "cleaned.json"


def peer_prefixes(ipcache: Mapping[IPv4Network, IpcacheEntry]) -> dict[int, list[str]]:
    """identity -> its prefixes: the proxy knows a query's peer by its address."""
    out: dict[int, list[str]] = {}
    for prefix, entry in ipcache.items():
        out.setdefault(entry.identity, []).append(str(prefix))
    return out


def rules_doc(dns: frozenset[DnsPolicy], fqdn: FrozenMap[str, int],
              ipcache: Mapping[IPv4Network, IpcacheEntry]) -> dict[str, Any]:
    rules = [p.canonical() for p in sorted(dns)]
    peers = {str(i): sorted(p) for i, p in peer_prefixes(ipcache).items()
             if any(p.identity == i for p in dns)}
    # the node's toCIDR /32s: the proxy never takes their entries (pods' and nodes' it knows by identity)
    owned = sorted(str(p.network_address) for p, e in ipcache.items()
                   if p.prefixlen == 32 and e.identity >= CIDR_IDENTITY_MIN)
    body = {"rules": rules, "fqdn": dict(fqdn.items()), "peers": peers, "owned": owned}
    version = hashlib.sha256(json.dumps(body, sort_keys=True).encode()).hexdigest()[:16]
    return {"format": FORMAT, "version": version, **body}


def write_rules(files: DnsFiles, dns: frozenset[DnsPolicy], fqdn: FrozenMap[str, int],
                ipcache: Mapping[IPv4Network, IpcacheEntry]) -> str:
    """Replace the rules the proxy runs (it reloads them on change); returns their version."""
    doc = rules_doc(dns, fqdn, ipcache)
    files.dir.mkdir(parents=True, exist_ok=True)
    atomic_write(files.rules, json.dumps(doc, sort_keys=True).encode())
    return str(doc["version"])


def read_rules(files: DnsFiles) -> tuple[frozenset[DnsPolicy], FrozenMap[str, int]]:
    """The DNS rules and selectors of the rules file (none when it is missing or not ours)."""
    try:
        doc = json.loads(files.rules.read_text())
        if doc.get("format") != FORMAT:
            return frozenset(), FrozenMap()
        return (frozenset(DnsPolicy.from_canonical(r) for r in doc["rules"]),
                FrozenMap({str(k): int(v) for k, v in doc["fqdn"].items()}))
    except (OSError, ValueError, KeyError, TypeError):
        return frozenset(), FrozenMap()


def running_version(files: DnsFiles) -> str | None:
    try:
        return str(json.loads(files.status.read_text())["version"])
    except (OSError, ValueError, KeyError, TypeError):
        return None


def proxy_pid(files: DnsFiles) -> int | None:
    """The pid of this node's DNS proxy when it runs (its cmdline names this directory)."""
    return pid_in_file(files.pid, str(files.dir))


def wait_version(files: DnsFiles, version: str, timeout: float = 15.0) -> None:
    """Until the proxy reports `version`: its rules are in force for the next query."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if running_version(files) == version:
            return
        time.sleep(0.02)
    raise MeshctlError(f"the DNS proxy in {files.dir} did not load rules {version} within {timeout:.0f}s "
                       f"(it runs {running_version(files)})")


@dataclass(frozen=True)
class CachedIp:
    """One learned IP (`meshctl fqdn cache list`): runtime state, written by the proxy alone."""

    ip: str
    identity: int
    names: tuple[str, ...]
    expires: float  # wall clock; the proxy keeps it past this while a connection uses it

    def to_json(self) -> dict[str, Any]:
        return {"ip": self.ip, "identity": self.identity, "names": list(self.names), "expires": self.expires}

    @classmethod
    def from_json(cls, d: Mapping[str, Any]) -> CachedIp:
        return cls(str(d["ip"]), int(d["identity"]), tuple(map(str, d["names"])), float(d["expires"]))


def fqdn_cache(files: DnsFiles) -> list[CachedIp]:
    """The IPs the node's DNS proxy learned, by IP."""
    try:
        ips = json.loads(files.learned.read_text())["ips"]
        return sorted((CachedIp.from_json({"ip": ip, **rec}) for ip, rec in ips.items()),
                      key=lambda c: IPv4Network(f"{c.ip}/32"))
    except FileNotFoundError:
        return []
    except (OSError, ValueError, KeyError, TypeError) as err:
        raise MeshctlError(f"{files.learned}: not a learned-IP file ({err})") from None


def learned_ipcache(files: DnsFiles) -> dict[IPv4Network, int]:
    """prefix -> identity of the IPs the proxy learned (and wrote into the ipcache); none when
    its file is unreadable (observe then shows them, as drift)."""
    try:
        return {IPv4Network(f"{c.ip}/32"): c.identity for c in fqdn_cache(files)}
    except MeshctlError:
        return {}


def clean_cache(files: DnsFiles, pattern: str, timeout: float = 5.0) -> list[str]:
    """Ask the node's DNS proxy to forget the learned IPs of names `pattern` matches ("" = all):
    they leave the ipcache (tracked connections keep going; new ones need a new answer). The
    proxy owns the learned IPs, so it does the work; returns the IPs it removed."""
    if proxy_pid(files) is None:
        if not files.learned.exists():
            return []  # no proxy ever ran here: nothing learned
        raise MeshctlError(f"no DNS proxy runs for {files.dir}: its agent starts it")
    request = {"id": uuid.uuid4().hex, "pattern": pattern}
    atomic_write(files.clean, json.dumps(request).encode())
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        try:
            answer = json.loads(files.cleaned.read_text())
            if answer.get("id") == request["id"]:
                return [str(ip) for ip in answer["removed"]]
        except (OSError, ValueError, KeyError, TypeError):
            pass
        time.sleep(0.02)
    raise MeshctlError(f"the DNS proxy in {files.dir} did not clean its cache within {timeout:.0f}s")


__all__ = [
    "CachedIp",
    "DnsFiles",
    "clean_cache",
    "fqdn_cache",
    "learned_ipcache",
    "proxy_pid",
    "read_rules",
    "rules_doc",
    "running_version",
    "wait_version",
    "write_rules",
]
