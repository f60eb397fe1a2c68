"""Make one node's kernel hold a target NodeState, make-before-break.

Order: load the object (if this build is not loaded yet), the L7 proxy's rules (old and new
together, so no redirect meets a proxy without its rules), config, ipcache adds/updates, each
changed endpoint's policy swapped in whole (new inner map, then one pointer update), endpoint
adds/updates, attachments added; then deletions last: attachments, endpoints, policy outer
entries, ipcache prefixes, and entries in forms compile never writes (NodeState.foreign), and
the proxy's rules as the target has them. So a packet never meets an endpoint whose policy or
peers are missing.

Every step is idempotent (upserts; deleting what is gone is fine), so running reconcile again
from any half-done point converges on the target: the apply engine uses it for apply, revert
and crash recovery. `current` should be freshly observed; it decides what to delete and which
policies to rebuild.

An attachment's `build` is informational here: reconcile attaches the programs of the object at
`datapath.object_path` (observe then reports that object's build hash).
"""

from __future__ import annotations

import errno as errno_mod
import logging
from collections.abc import Iterable, Mapping
from ipaddress import IPv4Network
from pathlib import Path
from typing import TypeVar

from meshctl.dataplane import lb_maps
from meshctl.dataplane.dnsproxy import DnsFiles, proxy_pid, write_rules
from meshctl.dataplane.dnsproxy import wait_version as dns_wait
from meshctl.dataplane.envoy import ProxyFiles, envoy_running, wait_version, write_routes
from meshctl.dataplane.foreign import ARRAYS, lpm_slot
from meshctl.dataplane.libbpf import Map
from meshctl.dataplane.maps import (
    U32,
    ConfigMap,
    EndpointsMap,
    IpcacheMap,
    PolicyMaps,
    encode_config,
    encode_endpoint,
    encode_ipcache,
)
from meshctl.dataplane.netns import host_routes
from meshctl.dataplane.node import NodeDatapath
from meshctl.dataplane.policy_rev import bump_revision
from meshctl.dataplane.wireguard.reconcile import reconcile_wireguard
from meshctl.errors import DataplaneError
from meshctl.nodestate import DnsPolicy, ForeignEntry, FrozenMap, HttpPolicy, IpcacheEntry, NodeState

log = logging.getLogger(__name__)
K = TypeVar("K")
V = TypeVar("V")


def reconcile(datapath: NodeDatapath, current: NodeState, target: NodeState) -> None:
    """Drive the node from `current` (observed) to `target`."""
    datapath.ensure_loaded()
    pins = datapath.pin_dir
    proxy = ProxyFiles.of(datapath.cluster, datapath.node)
    # The proxy matches peers by address: its rules follow the ipcache as well as the HTTP rules.
    proxy_moves = bool(target.http or current.http) and (
        target.http != current.http or target.ipcache != current.ipcache)
    dns = DnsFiles.of(datapath.cluster, datapath.node)
    dns_moves = bool(target.dns or current.dns) and (
        target.dns != current.dns or target.fqdn != current.fqdn or target.ipcache != current.ipcache)
    # The proxies' rules before the redirects that need them: old and new rules together first.
    if proxy_moves and target.http:
        _proxy_rules(proxy, current.http | target.http, {**current.ipcache, **target.ipcache})
    if dns_moves and target.dns:
        _dns_rules(dns, current.dns | target.dns, FrozenMap({**current.fqdn, **target.fqdn}),
                   {**current.ipcache, **target.ipcache})
    with ConfigMap.from_dir(pins) as cfg:
        cfg.write(target.config)  # one syscall: always written, so a zeroed map converges too

    if target.ipcache != current.ipcache:  # whole-map compare first: cheap for a no-op
        with IpcacheMap.from_dir(pins) as ipcache:
            ipcache.upsert(_changed(current.ipcache, target.ipcache))

    # an inner map holding foreign entries is replaced whole (inner maps are never edited)
    tainted = {e.owner for e in current.foreign if e.map == "policy"} & set(target.policies)
    if target.policies != current.policies or tainted:
        swap = _changed(current.policies, target.policies)
        swap.update({eid: target.policies[eid] for eid in tainted})
        with PolicyMaps.from_dir(pins) as policies:
            policies.swap_many(swap)

    if target.endpoints != current.endpoints:
        with EndpointsMap.from_dir(pins) as endpoints:
            endpoints.upsert(_changed(current.endpoints, target.endpoints))

    _attach(datapath, current, target)
    _load_balancer(datapath, current, target)

    # Break: only now remove what the target no longer has.
    target_endpoints = {a.endpoint for a in target.attachments}
    for ip in sorted({a.endpoint for a in current.attachments} - target_endpoints):
        datapath.detach_endpoint(ip)
    if gone := _gone(current.endpoints, target.endpoints):
        with EndpointsMap.from_dir(pins) as endpoints:
            endpoints.remove(gone)
    if gone_eps := _gone(current.policies, target.policies):
        with PolicyMaps.from_dir(pins) as policies:
            policies.remove(gone_eps)
    if gone_prefixes := _gone(current.ipcache, target.ipcache):
        with IpcacheMap.from_dir(pins) as ipcache:
            ipcache.remove(gone_prefixes)
    if current.foreign:
        _remove_foreign(pins, current.foreign, target)
    if proxy_moves:  # the redirects are gone: now the rules may go
        _proxy_rules(proxy, target.http, target.ipcache)
    if dns_moves:
        _dns_rules(dns, target.dns, target.fqdn, target.ipcache)
    reconcile_wireguard(datapath.cluster, datapath.node, datapath.netns, current.encryption,
                        target.encryption)
    bump_revision(pins)  # last: tracked connections are judged again, against the whole target


def _proxy_rules(proxy: ProxyFiles, http: frozenset[HttpPolicy],
                 ipcache: Mapping[IPv4Network, IpcacheEntry]) -> None:
    """Hand the node's Envoy its HTTP rules and wait until it runs them (the supervisor starts it
    when the node first has rules). With no rule and no Envoy there is nothing to wait for."""
    version = write_routes(proxy, http, ipcache)
    if http or envoy_running(proxy):
        wait_version(proxy, version)


def _dns_rules(files: DnsFiles, dns: frozenset[DnsPolicy], fqdn: FrozenMap[str, int],
               ipcache: Mapping[IPv4Network, IpcacheEntry]) -> None:
    """Hand the node's DNS proxy its rules and wait until it runs them (its supervisor starts it
    when the node first has rules)."""
    version = write_rules(files, dns, fqdn, ipcache)
    if dns or proxy_pid(files) is not None:
        dns_wait(files, version)


def _written_slots(target: NodeState) -> dict[str, set[bytes]]:
    """map name -> the slots (hash keys; LPM keys as the trie matches them) the target's
    entries occupy: reconcile has just written them all."""
    lb = target.load_balancer
    slots: dict[str, set[bytes]] = {
        "ipcache": {lpm_slot(encode_ipcache(p, e)[0]) for p, e in target.ipcache.items()},
        "endpoints": {encode_endpoint(a, e)[0] for a, e in target.endpoints.items()},
        "lb_services": {lb_maps.encode_frontend(f) for f in lb.services},
        "lb_backends": {U32.pack(i) for i in lb.backends},
        "lb_slots": {lb_maps.encode_slot(s.service_id, i + 1) for s in lb.services.values()
                     for i in range(len(s.backends))},
        "lb_maglev": {U32.pack(s.service_id) for s in lb.services.values() if s.maglev},
    }
    return slots


def _remove_foreign(pins: Path, entries: Iterable[ForeignEntry], target: NodeState) -> None:
    """Remove the foreign entries the target's writes did not overwrite (an overwritten one
    shares its slot with a target entry: deleting it would delete that entry). Inner policy
    maps with foreign entries were replaced whole above."""
    written = _written_slots(target)
    for entry in sorted(entries):
        path = pins / entry.map
        if entry.map == "policy" or not path.exists():
            continue
        key = bytes.fromhex(entry.key)
        with Map.from_pin(path) as m:
            if entry.map in ARRAYS:
                m.update(key, _array_bytes(entry.map, target))
            elif (lpm_slot(key) if entry.map == "ipcache" else key) not in written.get(entry.map, set()):
                m.delete(key)


def _array_bytes(name: str, target: NodeState) -> bytes:
    """What reconcile writes into a single-entry array map for `target`."""
    if name == "config":
        return encode_config(target.config)
    if name == "lb_config":
        return lb_maps.encode_node_config(target.load_balancer)
    return lb_maps.settings_bytes(target.load_balancer.settings)


def _changed(current: Mapping[K, V], target: Mapping[K, V]) -> dict[K, V]:
    """Entries of target that current lacks or holds with another value (plain dicts: fast)."""
    cur = dict(current)
    return {k: v for k, v in dict(target).items() if cur.get(k) != v}


def _gone(current: Mapping[K, V], target: Mapping[K, V]) -> list[K]:
    keep = set(target)
    return [k for k in current if k not in keep]


def _attach(datapath: NodeDatapath, current: NodeState, target: NodeState) -> None:
    """Attach every endpoint of the target that is not attached (both hooks at once)."""
    build = datapath.pinned_build()
    have = {(a.endpoint, a.hook) for a in current.attachments if a.build == build}
    wanted = sorted({a.endpoint for a in target.attachments if (a.endpoint, a.hook) not in have})
    if not wanted:
        return
    devices = host_routes(datapath.netns)
    for ip in wanted:
        ifname = devices.get(ip)
        if ifname is None:
            raise DataplaneError("attach to", f"endpoint {ip} on node {datapath.node}", errno_mod.ENODEV,
                                 f"no /32 route to {ip} in netns {datapath.netns}: is the pod's veth up?")
        datapath.attach(ifname, ip)
        log.debug("attached %s on %s (%s)", ip, ifname, datapath.node)


def _load_balancer(datapath: NodeDatapath, current: NodeState, target: NodeState) -> None:
    """LB maps (make-before-break inside) and the netdev programs on the underlay device."""
    cur, tgt = current.load_balancer, target.load_balancer
    if cur == tgt:
        return
    if not datapath.map_pin("lb_services").exists():
        raise DataplaneError("load balance on", f"node {datapath.node}", errno_mod.ENOENT,
                             f"the object {datapath.object_path} has no load-balancer maps: rebuild it")
    lb_maps.write(datapath.pin_dir, cur, tgt)
    if tgt.interface:
        datapath.attach_netdev(tgt.interface)
    elif cur.interface:
        datapath.detach_netdev()
