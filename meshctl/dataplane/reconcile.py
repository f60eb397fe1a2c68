"""Make one node's kernel hold a target NodeState, make-before-break.

Order: load the object (if this build is not loaded yet), config, ipcache adds/updates, each
changed endpoint's policy swapped in whole (new inner map, then one pointer update), endpoint
adds/updates, attachments added; then deletions last: attachments, endpoints, policy outer
entries, ipcache prefixes. So a packet never meets an endpoint whose policy or peers are missing.

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

from meshctl.dataplane.maps import ConfigMap, EndpointsMap, IpcacheMap, PolicyMaps
from meshctl.dataplane.netns import host_routes
from meshctl.dataplane.node import NodeDatapath
from meshctl.errors import DataplaneError
from meshctl.nodestate import NodeState

log = logging.getLogger(__name__)


def reconcile(datapath: NodeDatapath, current: NodeState, target: NodeState) -> None:
    """Drive the node from `current` (observed) to `target`."""
    datapath.ensure_loaded()
    pins = datapath.pin_dir
    with ConfigMap.from_dir(pins) as cfg:
        cfg.write(target.config)  # one syscall: always written, so a zeroed map converges too

    with IpcacheMap.from_dir(pins) as ipcache:
        ipcache.upsert({p: e for p, e in target.ipcache.items() if current.ipcache.get(p) != e})

    with PolicyMaps.from_dir(pins) as policies:
        for ep, entries in target.policies.items():
            if current.policies.get(ep) != entries:
                policies.swap(ep, entries)

    with EndpointsMap.from_dir(pins) as endpoints:
        endpoints.upsert({a: e for a, e in target.endpoints.items() if current.endpoints.get(a) != e})

    _attach(datapath, current, target)

    # Break: only now remove what the target no longer has.
    target_endpoints = {a.endpoint for a in target.attachments}
    for ip in sorted({a.endpoint for a in current.attachments} - target_endpoints):
        datapath.detach_endpoint(ip)
    with EndpointsMap.from_dir(pins) as endpoints:
        endpoints.remove(a for a in current.endpoints if a not in target.endpoints)
    with PolicyMaps.from_dir(pins) as policies:
        policies.remove(ep for ep in current.policies if ep not in target.policies)
    with IpcacheMap.from_dir(pins) as ipcache:
        ipcache.remove(p for p in current.ipcache if p not in target.ipcache)


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
