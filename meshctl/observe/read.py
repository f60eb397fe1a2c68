"""Read one node's kernel state (pinned maps, programs, links) into a RawNode; no parsing."""

from __future__ import annotations

from pathlib import Path

from meshctl.dataplane import lb_maps
from meshctl.dataplane.libbpf import Link, Map, Program
from meshctl.dataplane.maps import PolicyMaps
from meshctl.dataplane.netns import device_indexes, in_netns, netns_exists
from meshctl.dataplane.node import NETDEV_PROGRAMS, PROGRAMS, LinkPin, NodeDatapath
from meshctl.observe.programs import read_hooks
from meshctl.observe.raw import Dump, Items, RawLink, RawNode


def _items(dp: NodeDatapath, name: str) -> Items:
    path = dp.map_pin(name)
    if not path.exists():
        return []
    with Map.from_pin(path) as m:
        return m.items()


def read_links(pins: list[LinkPin], devices: dict[str, int]) -> list[RawLink]:
    """What each pinned link is attached to; `devices`: name -> index in the node's netns."""
    out = []
    for pin in pins:
        with Link.from_pin(pin.location) as link:
            info = link.info()
        out.append(RawLink(pin.ifname, pin.hook, pin.endpoint, info.prog_id, info.ifindex,
                           info.attach_type, devices.get(pin.ifname)))
    return out


def _devices(dp: NodeDatapath) -> dict[str, int] | None:
    """name -> index of the node netns' devices (one if_nameindex), None when the netns is gone."""
    if dp.netns is not None and not netns_exists(dp.netns):
        return None
    with in_netns(dp.netns):
        return device_indexes()


def read_node(dp: NodeDatapath) -> RawNode:
    if not dp.exists():
        return RawNode(dp.node)
    prog_ids = {}
    for hook in (*PROGRAMS, *NETDEV_PROGRAMS):
        if dp.prog_pin(hook).exists():
            with Program.from_pin(dp.prog_pin(hook)) as prog:
                prog_ids[hook] = prog.info().id
    config = None
    if dp.map_pin("config").exists():
        with Map.from_pin(dp.map_pin("config")) as m:
            config = m.lookup(b"\0\0\0\0")
    policies: dict[int, Items | Dump] = {}
    if dp.map_pin(PolicyMaps.map_name).exists():
        with PolicyMaps(Map.from_pin(dp.map_pin(PolicyMaps.map_name))) as pm:
            policies = pm.read_dumps()
    scan = dp.scan_links()
    devices = _devices(dp)
    links = read_links(scan.pods, devices or {})
    netdev = dp.netdev_interface(scan.netdev)
    return RawNode(
        node=dp.node,
        loaded=True,
        build=dp.pinned_build(),
        prog_ids=prog_ids,
        config=config,
        ipcache=_items(dp, "ipcache"),
        endpoints=_items(dp, "endpoints"),
        policies=policies,
        links=links,
        lb=lb_maps.read_raw(dp.pin_dir, netdev),
        hooks=read_hooks(dp.netns, [link.ifname for link in links] + ([netdev] if netdev else []), devices),
        our_programs=frozenset({*prog_ids.values(), *(link.prog_id for link in links),
                                *_netdev_progs(scan.netdev)}),
    )


def _netdev_progs(pins: dict[str, Path]) -> list[int]:
    out = []
    for path in pins.values():
        with Link.from_pin(path) as link:
            out.append(link.info().prog_id)
    return out
