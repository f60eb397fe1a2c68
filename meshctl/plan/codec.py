"""JSON keys and values of each change kind, and their inverses (diff writes, patch reads)."""

from __future__ import annotations

from collections.abc import Mapping
from ipaddress import IPv4Address, IPv4Network
from typing import Any

from meshctl.nodestate import (
    DNS_MIN_TTL,
    DNS_NXDOMAIN,
    Attachment,
    DatapathConfig,
    Direction,
    DnsPolicy,
    EndpointEntry,
    ForeignEntry,
    FqdnTable,
    FrozenMap,
    HttpPolicy,
    HttpRule,
    IpcacheEntry,
    PolicyEntry,
    PolicyKey,
)

# Fields a value leaves out at their zero value, so plans and states without them stay as they
# were (staged policies, L7): field -> the value its absence means.
IMPLICIT: dict[str, Any] = {"audit_ingress": False, "audit_egress": False, "proxy": False, "proxy_port": 0}


def config_value(c: DatapathConfig) -> dict[str, Any]:
    return c.canonical()


def config_from(v: dict[str, Any]) -> DatapathConfig:
    return DatapathConfig(**v)


def ipcache_value(e: IpcacheEntry) -> dict[str, Any]:
    return {"identity": e.identity, "flags": e.flags}


def ipcache_from(v: dict[str, Any]) -> IpcacheEntry:
    return IpcacheEntry(v["identity"], v["flags"])


def endpoint_value(e: EndpointEntry) -> dict[str, Any]:
    value: dict[str, Any] = {
        "endpoint_id": e.endpoint_id,
        "identity": e.identity,
        "enforce_ingress": e.enforce_ingress,
        "enforce_egress": e.enforce_egress,
    }
    # only when set: plans of clusters without staged policies keep their form
    if e.audit_ingress:
        value["audit_ingress"] = True
    if e.audit_egress:
        value["audit_egress"] = True
    return value


def endpoint_from(v: dict[str, Any]) -> EndpointEntry:
    return EndpointEntry(v["endpoint_id"], v["identity"], v["enforce_ingress"], v["enforce_egress"],
                         bool(v.get("audit_ingress", False)), bool(v.get("audit_egress", False)))


def policy_key(endpoint_id: int, k: PolicyKey) -> dict[str, Any]:
    return {
        "endpoint_id": endpoint_id,
        "direction": k.direction.label,
        "identity": k.identity,
        "protocol": k.protocol,
        "port": k.port,
        "port_prefix": k.port_prefix,
    }


def policy_key_from(d: dict[str, Any]) -> tuple[int, PolicyKey]:
    direction = Direction[d["direction"].upper()]
    return d["endpoint_id"], PolicyKey(direction, d["identity"], d["protocol"], d["port"], d["port_prefix"])


def policy_value(e: PolicyEntry) -> dict[str, Any]:
    return {"cookie": e.cookie, "deny": e.deny, **({"proxy_port": e.proxy_port} if e.proxy_port else {})}


def policy_from(v: dict[str, Any]) -> PolicyEntry:
    return PolicyEntry(v["cookie"], v["deny"], v.get("proxy_port", 0))


def http_key(p: HttpPolicy) -> dict[str, Any]:
    return {"endpoint": str(p.endpoint), "direction": p.direction.label, "port": p.port,
            "last_port": p.last_port, "identity": p.identity, "cookie": p.cookie}


def http_value(p: HttpPolicy) -> dict[str, Any]:
    return {"rules": [{k: v for k, v in (("method", r.method), ("path", r.path), ("host", r.host),
                                          ("headers", list(r.headers)),
                                          ("header_matches", [list(h) for h in r.header_matches])) if v}
                      for r in p.rules]}


def http_from(key: dict[str, Any], value: dict[str, Any]) -> HttpPolicy:
    rules = tuple(HttpRule(r.get("method", ""), r.get("path", ""), r.get("host", ""),
                           tuple(r.get("headers", ())), tuple((n, v) for n, v in r.get("header_matches", ())))
                  for r in value["rules"])
    return HttpPolicy(IPv4Address(key["endpoint"]), Direction[key["direction"].upper()], int(key["port"]),
                      int(key["last_port"]), int(key["identity"]), int(key["cookie"]), rules)


def dns_key(p: DnsPolicy) -> dict[str, Any]:
    return {"endpoint": str(p.endpoint), "port": p.port, "last_port": p.last_port, "identity": p.identity,
            "cookie": p.cookie}


def fqdn_value(fqdn: FrozenMap[str, int]) -> dict[str, Any]:
    """A node's fqdn table: its selectors and, when set, the DNS proxy's settings by their
    meshctl.toml names."""
    settings = FqdnTable.of(fqdn).settings
    value: dict[str, Any] = {"selectors": {k: v for k, v in fqdn.items() if k not in settings}}
    if DNS_MIN_TTL in settings:
        value["minTTL"] = settings[DNS_MIN_TTL]
    if settings.get(DNS_NXDOMAIN):
        value["rejectResponseCode"] = "nameError"
    return value


def fqdn_from(value: Mapping[str, Any]) -> FrozenMap[str, int]:
    table = {str(k): int(v) for k, v in value.get("selectors", {}).items()}
    if "minTTL" in value:
        table[DNS_MIN_TTL] = int(value["minTTL"])
    if value.get("rejectResponseCode") == "nameError":
        table[DNS_NXDOMAIN] = 1
    return FrozenMap(table)


def dns_value(p: DnsPolicy) -> dict[str, Any]:
    return {"names": list(p.names)}


def dns_from(key: dict[str, Any], value: dict[str, Any]) -> DnsPolicy:
    return DnsPolicy(IPv4Address(key["endpoint"]), int(key["port"]), int(key["last_port"]),
                     int(key["identity"]), int(key["cookie"]), tuple(value["names"]))


def attachment_key(a: Attachment) -> dict[str, Any]:
    return {"endpoint": str(a.endpoint), "hook": a.hook}


def attachment_value(a: Attachment) -> dict[str, Any]:
    return {"build": a.build}


def attachment_from(key: dict[str, Any], v: dict[str, Any]) -> Attachment:
    return Attachment(IPv4Address(key["endpoint"]), key["hook"], v["build"])


def prefix(key: str) -> IPv4Network:
    return IPv4Network(key)


def address(key: str) -> IPv4Address:
    return IPv4Address(key)


def foreign_key(e: ForeignEntry) -> dict[str, Any]:
    return {"map": e.map, "owner": e.owner, "key": e.key}


def foreign_value(e: ForeignEntry) -> dict[str, Any]:
    return {"value": e.value}


def foreign_from(key: dict[str, Any], v: dict[str, Any]) -> ForeignEntry:
    return ForeignEntry(key["map"], int(key["owner"]), key["key"], v["value"])
