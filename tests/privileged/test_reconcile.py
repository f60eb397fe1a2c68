"""reconcile: observe(reconcile(a -> b)) == b for many a, b; idempotent; converges when resumed."""

from __future__ import annotations

import random
from collections.abc import Iterator
from ipaddress import IPv4Address, IPv4Network
from pathlib import Path

import pytest
from bd_helpers import NodeNet, datapath_object, ensure_bpffs, node_net, tcp_connects, unique

from meshctl.dataplane.maps import EndpointsMap, IpcacheMap
from meshctl.dataplane.node import NodeDatapath
from meshctl.dataplane.reconcile import reconcile
from meshctl.errors import DataplaneError
from meshctl.nodestate import (
    PROTO_TCP,
    PROTO_UDP,
    Attachment,
    DatapathConfig,
    Direction,
    EndpointEntry,
    FrozenMap,
    IpcacheEntry,
    NodeState,
    PolicyEntry,
    PolicyKey,
)
from meshctl.observe import observe_node

pytestmark = pytest.mark.privileged

NPODS = 3


@pytest.fixture(scope="module")
def net() -> Iterator[NodeNet]:
    ensure_bpffs()
    with node_net(npods=NPODS) as n:
        yield n


@pytest.fixture(scope="module")
def dp(tmp_path_factory: pytest.TempPathFactory, net: NodeNet) -> Iterator[NodeDatapath]:
    obj: Path = datapath_object()
    d = NodeDatapath(unique("t-bd-rec"), "n1", net.ns, obj)
    try:
        yield d
    finally:
        d.remove()


def observe(dp: NodeDatapath) -> NodeState:
    return observe_node(dp.cluster, dp.node, dp.netns)


def random_state(rng: random.Random, net: NodeNet, build: str) -> NodeState:
    """A random but valid NodeState over the pods of `net`."""
    pods = rng.sample(net.pods, rng.randint(0, NPODS))
    ipcache = {IPv4Network(f"{p.pod_ip}/32"): IpcacheEntry(rng.choice([256, 257, 258])) for p in net.pods}
    for _ in range(rng.randint(0, 5)):
        ipcache[IPv4Network((rng.randrange(0, 1 << 32), rng.randint(8, 32)), strict=False)] = IpcacheEntry(
            (1 << 24) + rng.randrange(1000))
    endpoints, policies, attachments = {}, {}, set()
    for p in pods:
        ep = net.pods.index(p) + 1
        endpoints[p.pod_ip] = EndpointEntry(ep, 256 + ep, rng.random() < 0.5, rng.random() < 0.5)
        entries = {}
        for _ in range(rng.randint(0, 6)):
            proto = rng.choice([0, PROTO_TCP, PROTO_UDP])
            if proto:
                plen = rng.choice([0, 10, 16])
                port = rng.randrange(0, 1 << 16) & ~((1 << (16 - plen)) - 1)
                key = PolicyKey(rng.choice(list(Direction)), rng.choice([0, 256, 257]), proto, port, plen)
            else:
                key = PolicyKey(rng.choice(list(Direction)), rng.choice([0, 256, 257, 2]))
            entries[key] = PolicyEntry(rng.randrange(1, 1 << 32), rng.random() < 0.2)
        policies[ep] = FrozenMap(entries)
        if rng.random() < 0.7:
            attachments |= {Attachment(p.pod_ip, h, build) for h in ("from-pod", "to-pod")}
    cfg = DatapathConfig(ipv6_pass=rng.random() < 0.5, ct_timeout_tcp_s=rng.choice([21600, 3600]))
    return NodeState("n1", cfg, FrozenMap(ipcache), FrozenMap(endpoints), FrozenMap(policies),
                     frozenset(attachments))


def fixed_states(net: NodeNet, build: str) -> dict[str, NodeState]:
    p0, p1, _ = net.pods
    pol = {PolicyKey(Direction.INGRESS, 257, PROTO_TCP, 80, 16): PolicyEntry(5)}
    a = NodeState(
        "n1",
        ipcache=FrozenMap({IPv4Network(f"{p0.pod_ip}/32"): IpcacheEntry(256),
                           IPv4Network(f"{p1.pod_ip}/32"): IpcacheEntry(257)}),
        endpoints=FrozenMap({p0.pod_ip: EndpointEntry(1, 256, True, False),
                             p1.pod_ip: EndpointEntry(2, 257, False, False)}),
        policies=FrozenMap({1: FrozenMap(pol), 2: FrozenMap()}),
        attachments=frozenset(
            {Attachment(p.pod_ip, h, build) for p in (p0, p1) for h in ("from-pod", "to-pod")}
        ),
    )
    b = NodeState(
        "n1",
        config=DatapathConfig(ipv6_pass=True, ct_timeout_non_tcp_s=30),
        ipcache=FrozenMap({IPv4Network(f"{p0.pod_ip}/32"): IpcacheEntry(300),
                           IPv4Network("10.0.0.0/8"): IpcacheEntry(1 << 24)}),
        endpoints=FrozenMap({p0.pod_ip: EndpointEntry(1, 300, True, True)}),
        policies=FrozenMap({1: FrozenMap({PolicyKey(Direction.EGRESS, 0): PolicyEntry(9, True)})}),
        attachments=frozenset({Attachment(p0.pod_ip, h, build) for h in ("from-pod", "to-pod")}),
    )
    return {"empty": NodeState("n1"), "a": a, "b": b}


@pytest.mark.parametrize("path", [
    ["empty", "a", "b", "a", "empty"],
    ["b", "empty", "b", "b", "a"],
])
def test_roundtrip_between_fixed_states(dp: NodeDatapath, net: NodeNet, path: list[str]) -> None:
    dp.ensure_loaded()
    states = fixed_states(net, dp.build)
    for name in path:
        reconcile(dp, observe(dp), states[name])
        assert observe(dp) == states[name], f"after reconcile to {name}"
    reconcile(dp, observe(dp), NodeState("n1"))


def test_roundtrip_between_random_states(dp: NodeDatapath, net: NodeNet) -> None:
    dp.ensure_loaded()
    rng = random.Random(20260101)
    for i in range(12):
        target = random_state(rng, net, dp.build)
        reconcile(dp, observe(dp), target)
        assert observe(dp) == target, f"step {i}"
    reconcile(dp, observe(dp), NodeState("n1"))
    assert observe(dp) == NodeState("n1")


def test_idempotent_with_a_stale_current(dp: NodeDatapath, net: NodeNet) -> None:
    states = fixed_states(net, dp.build)
    reconcile(dp, observe(dp), states["a"])
    reconcile(dp, states["a"], states["b"])
    reconcile(dp, states["a"], states["b"])  # again, with the (now stale) current: harmless
    assert observe(dp) == states["b"]
    reconcile(dp, observe(dp), NodeState("n1"))


def test_converges_from_a_half_done_apply(dp: NodeDatapath, net: NodeNet) -> None:
    """Crash recovery: some steps of a -> b ran; reconcile from the observed state finishes it."""
    states = fixed_states(net, dp.build)
    reconcile(dp, observe(dp), states["a"])
    b = states["b"]
    with IpcacheMap.from_dir(dp.pin_dir) as m:  # only the first steps of a -> b
        m.upsert(b.ipcache)
    with EndpointsMap.from_dir(dp.pin_dir) as m:
        m.upsert(b.endpoints)
    half = observe(dp)
    assert half not in (states["a"], b)
    reconcile(dp, half, b)
    assert observe(dp) == b
    reconcile(dp, observe(dp), NodeState("n1"))


def test_reconcile_loads_a_node_that_was_never_loaded(tmp_path: Path, net: NodeNet) -> None:
    obj = datapath_object()
    fresh = NodeDatapath(unique("t-bd-rec"), "n2", net.ns, obj)
    try:
        target = fixed_states(net, fresh.build)["a"]
        reconcile(fresh, observe_node(fresh.cluster, "n2", net.ns), target)
        assert observe_node(fresh.cluster, "n2", net.ns) == NodeState(**{**target.__dict__, "node": "n2"})
        pod = net.pods[0]
        assert tcp_connects(net.ns, pod.node_ip, pod.pod_ns)  # mini datapath: config flags 0 = pass
    finally:
        fresh.remove()


def test_attachment_without_a_route_is_a_clear_error(dp: NodeDatapath) -> None:
    missing = Attachment(IPv4Address("10.99.0.1"), "from-pod", dp.build)
    target = NodeState("n1", attachments=frozenset({missing}))
    with pytest.raises(DataplaneError, match=r"no /32 route to 10\.99\.0\.1"):
        reconcile(dp, observe(dp), target)
