"""Real flow events without a lab: a pinned test node whose programs drop synthetic frames.

Used by the agent's privileged tests and bench/flows_bench.py. The node's `from_pod` program
runs on frames through BPF_PROG_TEST_RUN (no netns, no device); the source endpoint enforces
egress with an empty policy, so every frame is a default-deny drop, i.e. one ringbuf event.
"""

from __future__ import annotations

from dataclasses import dataclass
from ipaddress import IPv4Address, IPv4Network

from meshctl.dataplane.frames import tcp_frame
from meshctl.dataplane.libbpf import Program
from meshctl.dataplane.maps import EndpointsMap, IpcacheMap, PolicyMaps
from meshctl.dataplane.node import NodeDatapath
from meshctl.nodestate import EndpointEntry, IpcacheEntry

SRC_IP, DST_IP = "10.250.0.1", "10.250.0.2"
SRC_IDENTITY, DST_IDENTITY, ENDPOINT_ID = 40001, 40002, 7
TC_ACT_SHOT = 2


@dataclass
class TestNode:
    """A loaded, pinned datapath of cluster/node with one egress-isolated endpoint."""

    __test__ = False  # not a pytest class

    cluster: str
    node: str

    def __post_init__(self) -> None:
        self.dp = NodeDatapath(self.cluster, self.node, None)

    def up(self) -> TestNode:
        self.dp.ensure_loaded()
        pins = self.dp.pin_dir
        with EndpointsMap.from_dir(pins) as eps:
            eps.upsert({IPv4Address(SRC_IP): EndpointEntry(ENDPOINT_ID, SRC_IDENTITY, False, True)})
        with IpcacheMap.from_dir(pins) as ipc:
            ipc.upsert({IPv4Network(f"{SRC_IP}/32"): IpcacheEntry(SRC_IDENTITY),
                        IPv4Network(f"{DST_IP}/32"): IpcacheEntry(DST_IDENTITY)})
        with PolicyMaps.from_dir(pins) as pol:
            pol.swap(ENDPOINT_ID, {})
        return self

    def drop(self, repeat: int = 1, dport: int = 5432, sport: int = 40000) -> int:
        """Run one SYN from SRC to DST `repeat` times: each run is a drop and an event."""
        frame = tcp_frame(SRC_IP, DST_IP, sport, dport)
        with Program.from_pin(self.dp.prog_pin("from-pod")) as prog:
            res = prog.test_run(frame, repeat=repeat)
        return res.retval

    def remove(self) -> None:
        self.dp.remove()
