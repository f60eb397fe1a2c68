"""A loaded bpf/build/datapath.o with typed helpers to fill its maps and run its programs.

Shared by tests/privileged/test_datapath.py and bench/datapath_bench.py: no netns, no device;
packets go through BPF_PROG_TEST_RUN. Encodes map entries with the ctypes mirrors of
meshctl.dataplane.structs (byte order: `_be` fields hold network order).
"""

from __future__ import annotations

import ctypes
import os
import socket
import subprocess
import sys
from dataclasses import dataclass
from ipaddress import IPv4Address, IPv4Network
from pathlib import Path

from meshctl.dataplane.libbpf import BPF_F_NO_PREALLOC, BPF_MAP_TYPE_LPM_TRIE, BpfObject, Map
from meshctl.dataplane.ringbuf import drain
from meshctl.dataplane.structs import (
    POLICY_MAP_SIZE,
    CtKey,
    CtValue,
    DatapathConfig,
    EndpointKey,
    EndpointValue,
    FlowEvent,
    IpcacheKey,
    IpcacheValue,
    MetricsKey,
    MetricsValue,
    PolicyKey,
    PolicyValue,
)
from meshctl.nodestate import Direction
from meshctl.nodestate import PolicyKey as PlainPolicyKey

REPO = Path(__file__).resolve().parent.parent.parent
OBJECT = REPO / "bpf" / "build" / "datapath.o"
# Point the tests at another build (e.g. a deliberately broken one, to see them fail).
OBJECT_ENV = "MESHCTL_DATAPATH_OBJECT"

TC_ACT_OK = 0
TC_ACT_SHOT = 2


def build_object() -> Path:
    """make -C bpf (incremental, quiet) and return the object path."""
    if os.environ.get(OBJECT_ENV):
        return Path(os.environ[OBJECT_ENV])
    subprocess.run(["make", "-s", "-C", str(REPO / "bpf")], check=True, capture_output=True)
    return OBJECT


def be32(addr: str) -> int:
    """A c_uint32 value whose memory bytes are the address in network order."""
    return int.from_bytes(IPv4Address(addr).packed, sys.byteorder)


def be16(port: int) -> int:
    return socket.htons(port)


def ip_of(value_be: int) -> str:
    return str(IPv4Address(value_be.to_bytes(4, sys.byteorder)))


def port_of(value_be: int) -> int:
    return socket.ntohs(value_be)


@dataclass(frozen=True)
class Rule:
    """One inner policy map entry, written the way the compiler's NodeState says it."""

    direction: Direction
    identity: int
    protocol: int = 0
    port: int = 0
    port_prefix: int = 0
    cookie: int = 0
    deny: bool = False

    def key_bytes(self) -> bytes:
        plain = PlainPolicyKey(self.direction, self.identity, self.protocol, self.port, self.port_prefix)
        key = PolicyKey(prefixlen=plain.lpm_prefixlen, identity=self.identity, egress=int(self.direction),
                        protocol=self.protocol, dport_be=be16(self.port))
        return bytes(key)

    def value_bytes(self) -> bytes:
        return bytes(PolicyValue(cookie=self.cookie, flags=1 if self.deny else 0))


class Datapath:
    """The datapath object loaded once; every map reachable by name."""

    def __init__(self, path: Path = OBJECT) -> None:
        self.obj = BpfObject.open(path)
        self.obj.load()
        self.from_pod = self.obj.program("from_pod")
        self.to_pod = self.obj.program("to_pod")
        self.maps = {n: self.obj.map(n) for n in ("ipcache", "endpoints", "policy_maps", "ct", "events",
                                                  "metrics", "config", "policy_rev")}
        self._inner: dict[int, Map] = {}

    def close(self) -> None:
        for inner in self._inner.values():
            inner.close()
        self._inner.clear()
        self.obj.close()

    # -- state
    def reset(self) -> None:
        """Empty every map and the ringbuf: each test starts from a blank node."""
        for name in ("ipcache", "endpoints", "policy_maps", "ct", "metrics"):
            self.maps[name].clear()
        self.set_config(DatapathConfig())
        self.set_policy_revision(0)
        for inner in self._inner.values():
            inner.close()
        self._inner.clear()
        self.events()

    def set_config(self, cfg: DatapathConfig) -> None:
        self.maps["config"].update(bytes(ctypes.c_uint32(0)), bytes(cfg))

    def policy_revision(self) -> int:
        raw = self.maps["policy_rev"].lookup(bytes(ctypes.c_uint32(0)))
        return 0 if raw is None else int.from_bytes(raw, sys.byteorder)

    def set_policy_revision(self, rev: int) -> None:
        self.maps["policy_rev"].update(bytes(ctypes.c_uint32(0)), bytes(ctypes.c_uint32(rev)))

    def bump_policy_revision(self) -> None:
        """What reconcile does once a change is written: tracked connections get judged again."""
        self.set_policy_revision(self.policy_revision() + 1)

    def set_ipcache(self, prefix: str, identity: int) -> None:
        net = IPv4Network(prefix)
        key = IpcacheKey(prefixlen=net.prefixlen, addr_be=be32(str(net.network_address)))
        self.maps["ipcache"].update(bytes(key), bytes(IpcacheValue(identity=identity)))

    def set_endpoint(self, addr: str, endpoint_id: int, identity: int, ingress: bool, egress: bool,
                     audit_ingress: bool = False, audit_egress: bool = False) -> None:
        wanted = ((1, ingress), (2, egress), (4, audit_ingress), (8, audit_egress))  # ENDPOINT_F_*
        flags = sum(bit for bit, on in wanted if on)
        self.maps["endpoints"].update(bytes(EndpointKey(addr_be=be32(addr))),
                                      bytes(EndpointValue(endpoint_id=endpoint_id, identity=identity,
                                                          flags=flags)))
        self.set_ipcache(f"{addr}/32", identity)

    def new_policy_map(self, rules: list[Rule], max_entries: int = POLICY_MAP_SIZE) -> Map:
        """An inner LPM map holding rules (not yet installed)."""
        inner = Map.create(BPF_MAP_TYPE_LPM_TRIE, ctypes.sizeof(PolicyKey), ctypes.sizeof(PolicyValue),
                           max_entries, BPF_F_NO_PREALLOC, "mc_dp_policy")
        for r in rules:
            inner.update(r.key_bytes(), r.value_bytes())
        return inner

    def install_policy(self, endpoint_id: int, inner: Map) -> None:
        """Point policy_maps[endpoint_id] at inner (one atomic pointer swap)."""
        self.maps["policy_maps"].update(bytes(ctypes.c_uint32(endpoint_id)), bytes(ctypes.c_uint32(inner.fd)))
        old = self._inner.pop(endpoint_id, None)
        if old is not None and old is not inner:
            old.close()
        self._inner[endpoint_id] = inner

    def set_policy(self, endpoint_id: int, rules: list[Rule]) -> None:
        self.install_policy(endpoint_id, self.new_policy_map(rules))

    # -- observation
    def events(self) -> list[FlowEvent]:
        return drain(self.maps["events"])

    def metric(self, verdict: int, reason: int, direction: int) -> tuple[int, int]:
        """(packets, bytes) summed over CPUs; (0, 0) when never counted."""
        key = MetricsKey(verdict=verdict, reason=reason, direction=direction)
        raw = self.maps["metrics"].lookup(bytes(key))
        if raw is None:
            return (0, 0)
        size = ctypes.sizeof(MetricsValue)
        vals = [MetricsValue.from_buffer_copy(raw, i * size) for i in range(len(raw) // size)]
        return (sum(v.packets for v in vals), sum(v.bytes for v in vals))

    @staticmethod
    def ct_key(src: str, dst: str, sport: int, dport: int, protocol: int, direction: Direction) -> bytes:
        return bytes(CtKey(saddr_be=be32(src), daddr_be=be32(dst), sport_be=be16(sport), dport_be=be16(dport),
                           protocol=protocol, direction=int(direction)))

    def ct_get(self, key: bytes) -> CtValue | None:
        raw = self.maps["ct"].lookup(key)
        return None if raw is None else CtValue.from_buffer_copy(raw)

    def ct_put(self, key: bytes, value: CtValue) -> None:
        self.maps["ct"].update(key, bytes(value))
