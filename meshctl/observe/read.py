"""Read one node's kernel state (pinned maps, programs, links) into a RawNode; no parsing."""

from __future__ import annotations

from meshctl.dataplane import lb_maps
from meshctl.dataplane.libbpf import Link, Map, Program
from meshctl.dataplane.maps import PolicyMaps
from meshctl.dataplane.netns import device_indexes, in_netns, netns_exists
from meshctl.dataplane.node import NETDEV_PROGRAMS, PROGRAMS, NodeDatapath
from meshctl.observe.programs import read_hooks
from meshctl.observe.raw import Dump, Items, RawLink, RawNode


def _items(dp: NodeDatapath, name: str) -> Items:
    path = dp.map_pin(name)
    if not path.exists():
        return []
    with Map.from_pin(path) as m:
        return m.items()


def read_links(dp: NodeDatapath) -> list[RawLink]:
    pins = dp.link_pins()
    if not pins:
        return []
    devices: dict[str, int] = {}
    if dp.netns is None or netns_exists(dp.netns):
        with in_netns(dp.netns):
            devices = device_indexes()
    out = []
    for pin in pins:
        with Link.from_pin(pin.path) as link:
            info = link.info()
        out.append(RawLink(pin.ifname, pin.hook, pin.endpoint, info.prog_id, info.ifindex,
                           info.attach_type, devices.get(pin.ifname)))
    return out


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
    links = read_links(dp)
    netdev = dp.netdev_interface()
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
        hooks=read_hooks(dp.netns, [link.ifname for link in links] + ([netdev] if netdev else [])),
        our_programs=frozenset({*prog_ids.values(), *(link.prog_id for link in links), *_netdev_progs(dp)}),
    )


def _netdev_progs(dp: NodeDatapath) -> list[int]:
    out = []
    for path in dp.netdev_pins().values():
        with Link.from_pin(path) as link:
            out.append(link.info().prog_id)
    return out
