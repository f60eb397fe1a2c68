"""One node's datapath: load the object once, pin its maps and programs, attach on pod veths.

Pin layout under /sys/fs/bpf/meshctl/<cluster>/<node>/ (bpffs names may not contain '.'):

    config endpoints ipcache policy_maps ct events metrics   the object's maps
    policy_rev                ARRAY[1] __u32: the policy revision (meshctl.dataplane.policy_rev)
    build                     ARRAY[1] of 64 bytes: hex sha256 of the loaded object
    progs/from_pod progs/to_pod
    links/<ifname>/<hook>@<endpoint ip, dots as dashes>      pinned tcx links

Pinned maps are reused on every reload (bpf_map__reuse_fd), so entries survive an upgrade of the
object, unless the new object changed the map's key or value layout: that map starts empty (a
verifier would refuse the new program on the old layout). Pinned links are switched to the new
programs in place (BPF_LINK_UPDATE). The endpoint IP is recorded in the link pin name, so
observe can report an attachment without netlink.
"""

from __future__ import annotations

import contextlib
import errno as errno_mod
import hashlib
import os
import shutil
import subprocess
from collections.abc import Iterator
from dataclasses import dataclass
from ipaddress import IPv4Address
from pathlib import Path

from meshctl.dataplane.libbpf import BPF_MAP_TYPE_ARRAY, BpfObject, Link, LinkInfo, Map, Program
from meshctl.dataplane.maps import encode_config
from meshctl.dataplane.netns import BPF_TCX_EGRESS, BPF_TCX_INGRESS, HOOKS, attach_tcx, ifindex, in_netns
from meshctl.errors import DataplaneError
from meshctl.nodestate import DatapathConfig

PIN_ROOT = Path("/sys/fs/bpf/meshctl")
MAP_NAMES = ("config", "endpoints", "ipcache", "policy_maps", "ct", "events", "metrics")
# The policy revision (meshctl.dataplane.policy_rev): pinned when the object has it.
REVISION_MAP_NAMES = ("policy_rev",)
# The load balancer's maps and programs: pinned when the object has them (older objects do not).
LB_MAP_NAMES = ("lb_services", "lb_backends", "lb_slots", "lb_maglev", "lb_flows", "lb_affinity", "lb_config")
PROGRAMS = {"from-pod": "from_pod", "to-pod": "to_pod"}  # hook -> program name in the object
# The load balancer's programs on the node's underlay device (links/<ifname>/<hook>@netdev).
NETDEV_PROGRAMS = {"from-netdev": "from_netdev", "to-netdev": "to_netdev"}
NETDEV_HOOKS = {"from-netdev": BPF_TCX_INGRESS, "to-netdev": BPF_TCX_EGRESS}
BUILD_MAP = "build"
BUILD_VALUE_SIZE = 64
REPO_ROOT = Path(__file__).resolve().parent.parent.parent


def default_object_path() -> Path:
    """$MESHCTL_BPF_OBJECT, else <repo>/bpf/build/datapath.o next to the package."""
    env = os.environ.get("MESHCTL_BPF_OBJECT")
    return Path(env) if env else REPO_ROOT / "bpf" / "build" / "datapath.o"


def build_hash(path: str | Path) -> str:
    """The build id of an object: lowercase hex sha256 of the .o file."""
    try:
        return hashlib.sha256(Path(path).read_bytes()).hexdigest()
    except FileNotFoundError:
        raise DataplaneError("read BPF object", str(path), errno_mod.ENOENT,
                             "build it with `make -C bpf` or set MESHCTL_BPF_OBJECT") from None


def current_build() -> str:
    """The build id of the object this host would load (plan compares it with the nodes')."""
    return build_hash(default_object_path())


def node_pin_dir(cluster: str, node: str) -> Path:
    for what, name in (("cluster", cluster), ("node", node)):
        if not name or "." in name or "/" in name:
            raise DataplaneError("pin", f"{what} {name!r}", errno_mod.EINVAL,
                                 "bpffs names must be non-empty and contain no '.' or '/'")
    return PIN_ROOT / cluster / node


def ensure_bpffs() -> None:
    with open("/proc/mounts") as f:
        if any(line.split()[1:3] == ["/sys/fs/bpf", "bpf"] for line in f):
            return
    subprocess.run(["mount", "-t", "bpf", "bpf", "/sys/fs/bpf"], check=True)


def _ip_token(ip: IPv4Address) -> str:
    return str(ip).replace(".", "-")


@dataclass(frozen=True)
class LinkPin:
    """One pinned attachment, as named by its pin path."""

    ifname: str
    hook: str
    endpoint: IPv4Address
    location: str  # the pin's path (a str: a node of 10,000 pods has 20,000 of them)

    @property
    def path(self) -> Path:
        return Path(self.location)


@dataclass(frozen=True)
class LinkScan:
    """The link pins of a node from one walk of links/: pod attachments and the netdev ones."""

    pods: list[LinkPin]
    netdev: dict[str, Path]  # hook -> pin of from_netdev / to_netdev (links/<ifname>/<hook>@netdev)


def parse_link_pin(path: Path) -> LinkPin | None:
    """links/<ifname>/<hook>@<a-b-c-d> -> LinkPin; None for names we did not make."""
    return _link_pin(path.parent.name, path.name, str(path))


def _link_pin(ifname: str, name: str, location: str) -> LinkPin | None:
    hook, sep, ip = name.partition("@")
    if not sep or hook not in HOOKS:
        return None
    try:
        return LinkPin(ifname, hook, IPv4Address(ip.replace("-", ".")), location)
    except ValueError:
        return None


class NodeDatapath:
    """The datapath of one node (pins + attachments); every method is idempotent."""

    def __init__(
        self, cluster: str, node: str, netns: str | None, object_path: str | Path | None = None
    ) -> None:
        self.cluster, self.node, self.netns = cluster, node, netns
        self.object_path = Path(object_path) if object_path else default_object_path()
        self.pin_dir = node_pin_dir(cluster, node)

    # -- paths and state
    @property
    def build(self) -> str:
        """Build hash of the object this datapath loads."""
        return build_hash(self.object_path)

    def map_pin(self, name: str) -> Path:
        return self.pin_dir / name

    def prog_pin(self, hook: str) -> Path:
        return self.pin_dir / "progs" / {**PROGRAMS, **NETDEV_PROGRAMS}[hook]

    @property
    def links_dir(self) -> Path:
        return self.pin_dir / "links"

    def exists(self) -> bool:
        return self.pin_dir.is_dir()

    def open_map(self, name: str) -> Map:
        """A new fd on a pinned map (caller closes)."""
        return Map.from_pin(self.map_pin(name))

    def pinned_build(self) -> str | None:
        """Build hash recorded at the last load, None when never loaded."""
        path = self.map_pin(BUILD_MAP)
        if not path.exists():
            return None
        with Map.from_pin(path) as m:
            raw = m.lookup(b"\0\0\0\0") or b""
        return raw.rstrip(b"\0").decode() or None

    def is_loaded(self) -> bool:
        return (
            self.pinned_build() == self.build
            and all(self.map_pin(n).exists() for n in MAP_NAMES)
            and all(self.prog_pin(h).exists() for h in PROGRAMS)
        )

    # -- load
    def ensure_loaded(self) -> bool:
        """Load the object unless this very build is already pinned; True when it (re)loaded."""
        if self.is_loaded():
            return False
        ensure_bpffs()
        build = self.build
        self.pin_dir.mkdir(parents=True, exist_ok=True)
        reused: list[Map] = []
        with BpfObject.open(self.object_path) as obj:
            have = set(obj.map_names())
            names = MAP_NAMES + tuple(n for n in LB_MAP_NAMES + REVISION_MAP_NAMES if n in have)
            try:
                for name in names:
                    if self.map_pin(name).exists():
                        old = Map.from_pin(self.map_pin(name))
                        reused.append(old)
                        if obj.map_sizes(name) != (old.key_size, old.value_size):
                            self.map_pin(name).unlink()  # another layout: replaced by the new map
                            continue
                        obj.reuse_map(name, old.fd)
                obj.load()
            finally:
                for m in reused:
                    m.close()
            for name in names:
                if not self.map_pin(name).exists():
                    obj.map(name).pin(self.map_pin(name))
                    if name == "config":  # a new datapath holds the defaults, as apply writes them
                        obj.map(name).update(b"\0\0\0\0", encode_config(DatapathConfig()))
            (self.pin_dir / "progs").mkdir(exist_ok=True)
            progs = set(obj.program_names())
            for hook, prog_name in {**PROGRAMS, **NETDEV_PROGRAMS}.items():
                if prog_name not in progs:
                    self.prog_pin(hook).unlink(missing_ok=True)
                    continue
                prog = obj.program(prog_name)
                tmp = self.prog_pin(hook).with_name(prog_name + "_new")
                tmp.unlink(missing_ok=True)
                prog.pin(tmp)
                os.replace(tmp, self.prog_pin(hook))  # bpffs rename: the pin switches atomically
                self._upgrade_links(hook, prog)
        self._write_build(build)
        return True

    def _upgrade_links(self, hook: str, prog: Program) -> None:
        new_id = prog.info().id
        scan = self.scan_links()
        netdev = [LinkPin(p.parent.name, h, IPv4Address(0), str(p)) for h, p in scan.netdev.items()]
        for pin in scan.pods + netdev:
            if pin.hook != hook:
                continue
            with Link.from_pin(pin.path) as link:
                if link.info().prog_id != new_id:
                    link.update(prog.fd)

    def _write_build(self, build: str) -> None:
        path = self.map_pin(BUILD_MAP)
        if not path.exists():
            with Map.create(BPF_MAP_TYPE_ARRAY, 4, BUILD_VALUE_SIZE, 1, name="meshctl_build") as m:
                m.pin(path)
        with Map.from_pin(path) as m:
            m.update(b"\0\0\0\0", build.encode().ljust(BUILD_VALUE_SIZE, b"\0"))

    # -- attachments
    def scan_links(self) -> LinkScan:
        """Every pinned attachment, pods' sorted by device and pin name, from one os.scandir walk
        (a node of 10,000 pods has 20,000 pins: pathlib and globbing cost more than the syscalls)."""
        pods: list[LinkPin] = []
        netdev: dict[str, Path] = {}
        try:
            devices = sorted((e.name, e.path) for e in os.scandir(self.links_dir) if e.is_dir())
        except FileNotFoundError:
            return LinkScan(pods, netdev)
        for ifname, folder in devices:
            for name in sorted(os.listdir(folder)):
                location = os.path.join(folder, name)
                hook, _, owner = name.partition("@")
                if owner == "netdev" and hook in NETDEV_HOOKS:
                    netdev[hook] = Path(location)
                    continue
                pin = _link_pin(ifname, name, location)
                if pin is not None:
                    pods.append(pin)
        return LinkScan(pods, netdev)

    def link_pins(self) -> list[LinkPin]:
        """Every pinned pod attachment, sorted by device and pin name."""
        return self.scan_links().pods

    def attach(self, ifname: str, endpoint_ip: IPv4Address | str) -> None:
        """from_pod at tc ingress and to_pod at tc egress of the node-side veth `ifname`."""
        ip = IPv4Address(endpoint_ip)
        with self._on_device(ifname) as (ifdir, index):
            for hook in PROGRAMS:
                want = ifdir / f"{hook}@{_ip_token(ip)}"
                with Program.from_pin(self.prog_pin(hook)) as prog:
                    prog_id = prog.info().id
                    mine = (parse_link_pin(path) for path in sorted(ifdir.iterdir()))  # this device's pins
                    for old in [p for p in mine if p is not None and p.hook == hook]:
                        if old.path == want and self._link_ok(old.path, index, prog, prog_id):
                            continue
                        _detach_pin(old.path)
                    if not want.exists():
                        with attach_tcx(prog.fd, ifname, hook) as link:
                            link.pin(want)

    @contextlib.contextmanager
    def _on_device(self, ifname: str) -> Iterator[tuple[Path, int]]:
        """Inside the node's netns with the programs loaded: the link pin folder and ifindex of a device.

        attach and attach_netdev share this so both fail the same way on a missing device.
        """
        if not self.is_loaded():
            self.ensure_loaded()
        ifdir = self.links_dir / ifname
        ifdir.mkdir(parents=True, exist_ok=True)
        with in_netns(self.netns):
            index = ifindex(ifname)
            if index is None:
                raise DataplaneError("attach to", f"device {ifname} in netns {self.netns}", errno_mod.ENODEV)
            yield ifdir, index

    def _link_ok(self, path: Path, index: int, prog: Program, prog_id: int) -> bool:
        """An existing link still on this device; switched to the current program if needed."""
        with Link.from_pin(path) as link:
            info = link.info()
            if info.ifindex != index or info.attach_type != HOOKS[path.name.partition("@")[0]]:
                return False
            if info.prog_id != prog_id:
                link.update(prog.fd)
            return True

    def detach(self, ifname: str) -> None:
        """Remove both attachments of one veth (missing ones are fine)."""
        ifdir = self.links_dir / ifname
        if not ifdir.is_dir():
            return
        for path in list(ifdir.iterdir()):
            _detach_pin(path)
        ifdir.rmdir()

    def detach_endpoint(self, endpoint_ip: IPv4Address | str) -> None:
        """Remove the attachments recorded for one endpoint IP, whatever the veth."""
        ip = IPv4Address(endpoint_ip)
        for pin in self.link_pins():
            if pin.endpoint == ip:
                _detach_pin(pin.path)
                if not any(pin.path.parent.iterdir()):
                    pin.path.parent.rmdir()

    # -- the load balancer's underlay attachments
    def netdev_pins(self) -> dict[str, Path]:
        """hook -> pin of the from_netdev / to_netdev links (links/<ifname>/<hook>@netdev)."""
        return self.scan_links().netdev

    def netdev_interface(self, pins: dict[str, Path] | None = None) -> str:
        """The device both netdev programs are attached to and still running on, else "".
        `pins`: netdev_pins() when the caller has them already."""
        pins = self.netdev_pins() if pins is None else pins
        if set(pins) != set(NETDEV_HOOKS) or len({p.parent.name for p in pins.values()}) != 1:
            return ""
        ifname = next(iter(pins.values())).parent.name
        with in_netns(self.netns):
            index = ifindex(ifname)
        for hook, path in pins.items():
            with Link.from_pin(path) as link, Program.from_pin(self.prog_pin(hook)) as prog:
                info = link.info()
                if info.ifindex != index or info.prog_id != prog.info().id:
                    return ""
        return ifname

    def attach_netdev(self, ifname: str) -> None:
        """from_netdev at tc ingress and to_netdev at tc egress of the underlay device `ifname`."""
        if self.netdev_interface() == ifname:
            return
        self.detach_netdev()
        with self._on_device(ifname) as (ifdir, index):
            for hook in NETDEV_PROGRAMS:
                with Program.from_pin(self.prog_pin(hook)) as prog:
                    label = f"{hook} program on {ifname}"
                    with Link.create(prog.fd, index, NETDEV_HOOKS[hook], label=label) as link:
                        link.pin(ifdir / f"{hook}@netdev")

    def detach_netdev(self) -> None:
        for path in self.netdev_pins().values():
            _detach_pin(path)
            if not any(path.parent.iterdir()):
                path.parent.rmdir()

    def link_info(self, pin: LinkPin) -> LinkInfo:
        with Link.from_pin(pin.path) as link:
            return link.info()

    def remove(self) -> None:
        """Detach everything and unpin every object of this node."""
        for pin in self.link_pins():
            _detach_pin(pin.path)
        shutil.rmtree(self.pin_dir, ignore_errors=True)
        cluster_dir = self.pin_dir.parent
        if cluster_dir.is_dir() and not any(cluster_dir.iterdir()):
            cluster_dir.rmdir()


def _detach_pin(path: Path) -> None:
    """Detach a pinned link (a gone device already detached it) and drop the pin."""
    try:
        with Link.from_pin(path) as link, contextlib.suppress(DataplaneError):
            link.detach()
    except DataplaneError:
        pass
    path.unlink(missing_ok=True)
