"""Lazy policy maps behind the map cache: known dumps stay undecoded, hand changes still show.

A node holding exactly the planned maps is observed without decoding them (meshctl.lazypolicy),
with byte-identical fingerprints; an inner map changed behind a cached digest (Map.update, as
bpftool would) has other raw bytes, is decoded, and the plan shows the change.
"""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import pytest
from bd_helpers import NodeNet, datapath_object, ensure_bpffs, node_net, unique

from meshctl.catalog import Catalog
from meshctl.dataplane import maps
from meshctl.dataplane.libbpf import Map
from meshctl.dataplane.maps import U32, PolicyMaps, encode_policy
from meshctl.dataplane.node import NodeDatapath
from meshctl.lazypolicy import LazyPolicyMap
from meshctl.nodestate import PROTO_TCP, Direction, FrozenMap, NodeState, PolicyEntry, PolicyKey
from meshctl.observe import mapcache, observe_node, parse
from meshctl.observe.parse import parse_node
from meshctl.observe.read import read_node
from meshctl.plan import build_plan

pytestmark = pytest.mark.privileged

WEB = FrozenMap({
    PolicyKey(Direction.INGRESS, 300, PROTO_TCP, 80, 16): PolicyEntry(0x11),
    PolicyKey(Direction.INGRESS, 301, PROTO_TCP, 8080, 12): PolicyEntry(0x12),
    PolicyKey(Direction.EGRESS, 2): PolicyEntry(0x13, deny=True),
})
DB = FrozenMap({PolicyKey(Direction.INGRESS, 300, PROTO_TCP, 5432, 16): PolicyEntry(0x21)})


@pytest.fixture(scope="module")
def obj(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return datapath_object()


@pytest.fixture(scope="module")
def net() -> Iterator[NodeNet]:
    ensure_bpffs()
    with node_net() as n:
        yield n


@pytest.fixture()
def dp(obj: Path, net: NodeNet, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Iterator[NodeDatapath]:
    monkeypatch.setenv("MESHCTL_CACHE_DIR", str(tmp_path / "cache"))
    d = NodeDatapath(unique("t-mc-cache"), "n1", net.ns, obj)
    try:
        d.ensure_loaded()
        with PolicyMaps.from_dir(d.pin_dir) as pm:
            pm.swap_many({1: WEB, 2: WEB, 3: DB})
        yield d
    finally:
        d.remove()


def _fresh_process() -> None:
    """Forget in-process decodes, as a new `meshctl plan` would: only the cache file remains."""
    for memo in (maps._TABLES, parse._LAZY):
        memo.clear()


def _observe(dp: NodeDatapath) -> NodeState:
    _fresh_process()
    return observe_node(dp.cluster, dp.node, dp.netns)


def _intended() -> NodeState:
    return NodeState("n1", policies=FrozenMap({1: WEB, 2: WEB, 3: DB}))


def test_known_maps_stay_undecoded_with_identical_fingerprints(dp: NodeDatapath) -> None:
    cold = _observe(dp)  # decodes every map and learns the cache file
    assert not any(isinstance(m, LazyPolicyMap) for m in cold.policies.values())
    assert (mapcache.cache_dir() / mapcache.FILE).exists()

    warm = _observe(dp)
    lazy = list(warm.policies.values())
    assert all(isinstance(m, LazyPolicyMap) and m.pending for m in lazy)
    assert lazy[0] is lazy[1]  # endpoints 1 and 2 share one inner map
    intended = NodeState("n1", policies=FrozenMap({1: FrozenMap(dict(WEB)), 2: WEB, 3: FrozenMap(dict(DB))}))
    plan = build_plan({"n1": warm}, {"n1": intended}, Catalog(), impact=False)
    assert plan.changes == ()
    assert all(m.pending for m in lazy)  # compared by digest, texts adopted: never decoded
    assert plan.nodes[0].observed_fingerprint == cold.fingerprint() == intended.fingerprint()
    assert warm == cold and dict(warm.policies[3]) == dict(DB)  # reading decodes on demand
    assert not lazy[2].pending


def test_inner_map_changed_behind_a_cached_digest_is_seen(dp: NodeDatapath) -> None:
    _observe(dp)  # learns the digests of WEB and DB as loaded
    with PolicyMaps.from_dir(dp.pin_dir) as pm:
        inner_id = U32.unpack(pm.map.lookup(U32.pack(3)))[0]
    key, _ = encode_policy(PolicyKey(Direction.INGRESS, 300, PROTO_TCP, 5432, 16), PolicyEntry(0x21))
    _, deny = encode_policy(PolicyKey(Direction.INGRESS, 300, PROTO_TCP, 5432, 16), PolicyEntry(0x21, True))
    with Map.from_id(inner_id) as inner:
        inner.update(key, deny)  # a hand edit, like `bpftool map update id N key .. value ..`

    observed = _observe(dp)
    assert not isinstance(observed.policies[3], LazyPolicyMap)  # other raw bytes: decoded
    assert isinstance(observed.policies[1], LazyPolicyMap)
    assert observed.policies[3] == FrozenMap({PolicyKey(Direction.INGRESS, 300, PROTO_TCP, 5432, 16):
                                              PolicyEntry(0x21, True)})
    plan = build_plan({"n1": observed}, {"n1": _intended()}, Catalog(), impact=False)
    assert [(c.address, c.before, c.after) for c in plan.changes] == [
        ("n1 policy endpoint:3 ingress allow identity:300 tcp/5432",
         {"cookie": 0x21, "deny": True}, {"cookie": 0x21, "deny": False}),
    ]
    raw = read_node(dp)
    assert plan.nodes[0].observed_fingerprint == parse_node(raw).fingerprint()  # same as a full decode
