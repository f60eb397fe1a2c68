"""The node's HTTP proxy (Envoy) configuration, made from a NodeState and read back from Envoy.

Envoy runs without an xDS server: a static bootstrap (one transparent listener, the
original-destination cluster) whose HTTP connection manager reads its routes from a file
(`path_config_source`, replaced atomically). The RBAC rules live on the route
(RBACPerRoute), so a policy edit applies to the next request of an open keep-alive connection.
The route also carries the HttpPolicy rows it was made from (metadata `meshctl.http`): observe
reads them back from Envoy's config dump.

Peers are matched by address: an HttpPolicy's identity becomes the ipcache prefixes of that
identity (world: every address outside the ipcache), the endpoint its /32.
"""

from __future__ import annotations

import hashlib
import json
from collections.abc import Iterable, Mapping
from ipaddress import IPv4Network
from pathlib import Path
from typing import Any

from meshctl.dataplane.structs import MARK_FROM_PROXY
from meshctl.nodestate import HTTP_PROXY_PORT, Direction, HttpPolicy, HttpRule, IpcacheEntry, ReservedIdentity

ROUTE_NAME = "meshctl-http"
METADATA_KEY = "meshctl"
DENIED_BODY = "Access denied"
_T = "type.googleapis.com/envoy."


def policy_name(p: HttpPolicy, index: int) -> str:
    """The RBAC policy of rule `index` of `p`: access logs name it, flows map the cookie back to
    the CNP and its line (parse_policy_name)."""
    return f"cookie={p.cookie} rule={index} {p.direction.label} {p.endpoint}:{p.ports} peer={p.identity}"


def parse_policy_name(name: str) -> tuple[int, int, Direction] | None:
    """(cookie, rule index, direction) of a policy_name; None for any other text."""
    parts = name.split()
    try:
        cookie, rule, direction = parts[0], parts[1], parts[2]
        return (int(cookie.removeprefix("cookie=")), int(rule.removeprefix("rule=")),
                Direction.EGRESS if direction == Direction.EGRESS.label else Direction.INGRESS)
    except (IndexError, ValueError):
        return None


def _cidr(net: IPv4Network) -> dict[str, Any]:
    return {"address_prefix": str(net.network_address), "prefix_len": net.prefixlen}


def _header(name: str, regex: str | None = None, exact: str | None = None) -> dict[str, Any]:
    if regex is not None:
        return {"header": {"name": name, "string_match": {"safe_regex": {"regex": regex}}}}
    if exact is not None:
        return {"header": {"name": name, "string_match": {"exact": exact}}}
    return {"header": {"name": name, "present_match": True}}


def rule_permission(rule: HttpRule) -> list[dict[str, Any]]:
    """The request half of one HTTP rule: every field set must match (regexes in full)."""
    out = []
    for name, regex in ((":method", rule.method), (":path", rule.path), (":authority", rule.host)):
        if regex:
            out.append(_header(name, regex=regex))
    for h in rule.headers:
        name, sep, value = h.partition(": ")
        out.append(_header(name, exact=value) if sep else _header(name))
    for name, value in rule.header_matches:
        out.append(_header(name, exact=value) if value else _header(name))
    return out


def peer_prefixes(ipcache: Mapping[IPv4Network, IpcacheEntry]) -> dict[int, list[IPv4Network]]:
    """identity -> its ipcache prefixes."""
    out: dict[int, list[IPv4Network]] = {}
    for net, entry in ipcache.items():
        out.setdefault(entry.identity, []).append(net)
    return out


# RBAC's words for "any of" and "none of" in a principal (direct_remote_ip) and a permission
_SETS = {"direct_remote_ip": ("or_ids", "ids", "not_id"), "destination_ip": ("or_rules", "rules", "not_rule")}


def _addresses(kind: str, identity: int, prefixes: Mapping[int, list[IPv4Network]]) -> dict[str, Any] | None:
    """A principal or permission matching the addresses of `identity` (`kind` names the RBAC
    field: direct_remote_ip or destination_ip); None when the identity has no address here."""
    if identity == ReservedIdentity.ANY:
        return {"any": True}
    any_of, items, none_of = _SETS[kind]
    if identity == ReservedIdentity.WORLD:  # every address the ipcache does not know
        known = sorted(n for ident, nets in prefixes.items() if ident != identity for n in nets)
        return {none_of: {any_of: {items: [{kind: _cidr(n)} for n in known]}}} if known else {"any": True}
    nets = sorted(prefixes.get(identity, ()))
    return {any_of: {items: [{kind: _cidr(n)} for n in nets]}} if nets else None


def rbac_policies(http: Iterable[HttpPolicy], ipcache: Mapping[IPv4Network, IpcacheEntry]) -> dict[str, Any]:
    """RBAC policies (ALLOW) for the node's HttpPolicies: a request passes when one matches."""
    prefixes = peer_prefixes(ipcache)
    policies: dict[str, Any] = {}
    for p in sorted(http):
        local = IPv4Network(f"{p.endpoint}/32")
        if p.direction == Direction.INGRESS:
            peer = _addresses("direct_remote_ip", p.identity, prefixes)
            if peer is None:
                continue
            principal, where = peer, [{"destination_ip": _cidr(local)}]
        else:
            dest = _addresses("destination_ip", p.identity, prefixes)
            if dest is None:
                continue
            principal, where = {"direct_remote_ip": _cidr(local)}, [dest]
        where.append({"destination_port": p.port} if p.port == p.last_port else
                     {"destination_port_range": {"start": p.port, "end": p.last_port + 1}})
        for i, rule in enumerate(p.rules or (HttpRule(),)):
            policies[policy_name(p, i)] = {
                "permissions": [{"and_rules": {"rules": [*where, *rule_permission(rule)]}}],
                "principals": [principal],
            }
    return policies


def http_rows_text(http: Iterable[HttpPolicy]) -> str:
    return json.dumps([p.canonical() for p in sorted(http)], separators=(",", ":"))


def route_config(http: Iterable[HttpPolicy], ipcache: Mapping[IPv4Network, IpcacheEntry]) -> dict[str, Any]:
    """The RouteConfiguration: one route to the original destination, RBAC on it, the rows it
    was made from in its metadata."""
    http = sorted(http)
    return {
        "@type": _T + "config.route.v3.RouteConfiguration",
        "name": ROUTE_NAME,
        "virtual_hosts": [{
            "name": "all",
            "domains": ["*"],
            "routes": [{
                "match": {"prefix": "/"},
                "route": {"cluster": "original_dst", "timeout": "0s"},
                "metadata": {"filter_metadata": {METADATA_KEY: {"http": http_rows_text(http)}}},
                "typed_per_filter_config": {"envoy.filters.http.rbac": {
                    "@type": _T + "extensions.filters.http.rbac.v3.RBACPerRoute",
                    "rbac": {"rules": {"action": "ALLOW", "policies": rbac_policies(http, ipcache)}},
                }},
            }],
        }],
    }


def config_version(route: Mapping[str, Any]) -> str:
    """The version Envoy reports for a route file: a digest of what it holds."""
    return hashlib.sha256(json.dumps(route, sort_keys=True).encode()).hexdigest()[:16]


def routes_file(route: Mapping[str, Any]) -> dict[str, Any]:
    """The DiscoveryResponse Envoy reads through path_config_source."""
    return {"version_info": config_version(route), "resources": [route]}


ACCESS_LOG_FIELDS = {
    "start": "%START_TIME(%s.%6f)%",
    "method": "%REQ(:METHOD)%",
    "path": "%REQ(:PATH)%",
    "authority": "%REQ(:AUTHORITY)%",
    "protocol": "%PROTOCOL%",
    "status": "%RESPONSE_CODE%",
    "duration_ms": "%DURATION%",
    "latency_us": "%COMMON_DURATION(DS_RX_BEG:DS_TX_BEG:us)%",  # to the response's first byte
    "client": "%DOWNSTREAM_REMOTE_ADDRESS%",
    "server": "%DOWNSTREAM_LOCAL_ADDRESS%",
    "policy": "%DYNAMIC_METADATA(envoy.filters.http.rbac:enforced_effective_policy_id)%",
    "rbac": "%DYNAMIC_METADATA(envoy.filters.http.rbac:enforced_engine_result)%",
    "flags": "%RESPONSE_FLAGS%",
    "details": "%RESPONSE_CODE_DETAILS%",
}


def listener(route_source: dict[str, Any], access_log: Path) -> dict[str, Any]:
    """The transparent listener: the datapath assigns it the connections of L7 ports; the
    accepted socket's local address is the original destination, and upstream connections leave
    from the client's address with MARK_FROM_PROXY (original_src)."""
    return {
        "name": "http",
        "address": {"socket_address": {"address": "127.0.0.1", "port_value": HTTP_PROXY_PORT}},
        "transparent": True,
        "listener_filters": [
            {"name": "envoy.filters.listener.original_dst",
             "typed_config": {"@type": _T + "extensions.filters.listener.original_dst.v3.OriginalDst"}},
            {"name": "envoy.filters.listener.original_src",
             "typed_config": {"@type": _T + "extensions.filters.listener.original_src.v3.OriginalSrc",
                              "mark": MARK_FROM_PROXY}},
        ],
        "filter_chains": [{"filters": [{
            "name": "envoy.filters.network.http_connection_manager",
            "typed_config": {
                "@type": _T + "extensions.filters.network.http_connection_manager.v3.HttpConnectionManager",
                "stat_prefix": "http",
                **route_source,
                "upgrade_configs": [{"upgrade_type": "websocket"}],
                "http_filters": [
                    {"name": "envoy.filters.http.rbac",
                     "typed_config": {"@type": _T + "extensions.filters.http.rbac.v3.RBAC"}},
                    {"name": "envoy.filters.http.router",
                     "typed_config": {"@type": _T + "extensions.filters.http.router.v3.Router"}},
                ],
                "local_reply_config": {"mappers": [{
                    "filter": {"status_code_filter": {"comparison": {
                        "op": "EQ", "value": {"default_value": 403, "runtime_key": "meshctl.denied"}}}},
                    "body": {"inline_string": DENIED_BODY},
                }]},
                "access_log": [{
                    "name": "envoy.access_loggers.file",
                    "typed_config": {
                        "@type": _T + "extensions.access_loggers.file.v3.FileAccessLog",
                        "path": str(access_log),
                        "log_format": {"json_format": ACCESS_LOG_FIELDS},
                    },
                }],
            },
        }]}],
    }


def original_dst_cluster() -> dict[str, Any]:
    return {"name": "original_dst", "type": "ORIGINAL_DST", "lb_policy": "CLUSTER_PROVIDED",
            "connect_timeout": "2s"}


def bootstrap(node: str, cluster: str, routes: Path, admin: Path, access_log: Path) -> dict[str, Any]:
    """Envoy's bootstrap: admin on a unix socket (reachable from any netns), routes from `routes`."""
    source = {"rds": {"route_config_name": ROUTE_NAME, "config_source": {
        "path_config_source": {"path": str(routes), "watched_directory": {"path": str(routes.parent)}},
        "resource_api_version": "V3"}}}
    return {
        "node": {"id": node, "cluster": cluster},
        "admin": {"address": {"pipe": {"path": str(admin)}}},
        "static_resources": {"listeners": [listener(source, access_log)],
                             "clusters": [original_dst_cluster()]},
    }


def validation_bootstrap(route: Mapping[str, Any], access_log: Path) -> dict[str, Any]:
    """A bootstrap with `route` inline, for `envoy --mode validate` (which reads no dynamic file)."""
    inline = {k: v for k, v in route.items() if k != "@type"}
    return {"static_resources": {"listeners": [listener({"route_config": inline}, access_log)],
                                 "clusters": [original_dst_cluster()]}}


def _our_route(dump: Mapping[str, Any]) -> Mapping[str, Any] | None:
    """Our DynamicRouteConfig in a config dump of `?resource=dynamic_route_configs`."""
    for dyn in dump.get("configs", ()):
        if (dyn.get("route_config") or {}).get("name") == ROUTE_NAME:
            return dyn  # type: ignore[no-any-return]
    return None


def http_from_route(route_config: Mapping[str, Any]) -> frozenset[HttpPolicy] | None:
    """The HttpPolicies a RouteConfiguration was made from (its metadata rows); None when it is
    not one of ours."""
    try:
        route = route_config["virtual_hosts"][0]["routes"][0]
        rows = json.loads(route["metadata"]["filter_metadata"][METADATA_KEY]["http"])
        return frozenset(HttpPolicy.from_canonical(row) for row in rows)
    except (KeyError, IndexError, ValueError, TypeError):
        return None


def http_from_dump(dump: Mapping[str, Any]) -> frozenset[HttpPolicy] | None:
    """The HttpPolicies of the route Envoy runs (its config dump); None when it holds none of ours."""
    dyn = _our_route(dump)
    return None if dyn is None else http_from_route(dyn.get("route_config") or {})


def version_from_dump(dump: Mapping[str, Any]) -> str | None:
    dyn = _our_route(dump)
    return None if dyn is None else str(dyn.get("version_info") or "")
