"""Inner policy maps shared between endpoints with identical policy: one map, several slots.

Reconcile publishes one inner map per distinct policy content; observe reads each inner map id
once and decodes each distinct dump once. Swaps stay per endpoint: changing one endpoint's
policy gives it a new inner map and leaves the shared one (and the other endpoints) alone.
"""

from __future__ import annotations

from collections.abc import Iterator

import pytest
from bd_helpers import ensure_bpffs

from meshctl.dataplane.libbpf import BPF_MAP_TYPE_HASH_OF_MAPS, Map
from meshctl.dataplane.maps import INNER_POLICY_MAP, U32, PolicyMaps, decode_policy_table
from meshctl.nodestate import PROTO_TCP, Direction, FrozenMap, PolicyEntry, PolicyKey

pytestmark = pytest.mark.privileged


def policy(port: int) -> FrozenMap[PolicyKey, PolicyEntry]:
    return FrozenMap({
        PolicyKey(Direction.INGRESS, 300 + i, PROTO_TCP, port, 16): PolicyEntry(i + 1) for i in range(50)
    } | {PolicyKey(Direction.EGRESS, 0): PolicyEntry(99, deny=True)})


@pytest.fixture()
def outer() -> Iterator[PolicyMaps]:
    ensure_bpffs()
    template = Map.create(name="mc_sh_tmpl", **INNER_POLICY_MAP)  # type: ignore[arg-type]
    try:
        pm = PolicyMaps(Map.create(BPF_MAP_TYPE_HASH_OF_MAPS, 4, 4, 64, name="mc_sh_outer",
                                   inner_map_fd=template.fd))
    finally:
        template.close()
    try:
        yield pm
    finally:
        pm.close()


def inner_ids(pm: PolicyMaps) -> dict[int, int]:
    return {U32.unpack(k)[0]: U32.unpack(v)[0] for k, v in pm.map.lookup_batch()}


def test_identical_policies_share_one_inner_map(outer: PolicyMaps) -> None:
    a, b = policy(80), policy(443)
    outer.swap_many({1: a, 2: FrozenMap(dict(a)), 3: a, 4: b})  # 2: equal content, other object
    ids = inner_ids(outer)
    assert ids[1] == ids[2] == ids[3] != ids[4]
    dumps = outer.read_dumps()
    assert dumps[1] is dumps[2] is dumps[3]  # read once
    assert decode_policy_table(*dumps[1]) is decode_policy_table(*dumps[3])  # decoded once
    assert outer.read() == FrozenMap({1: a, 2: a, 3: a, 4: b})


def test_swapping_one_endpoint_leaves_the_shared_map_alone(outer: PolicyMaps) -> None:
    a, b = policy(80), policy(8080)
    outer.swap_many({1: a, 2: a, 3: a})
    shared = inner_ids(outer)[1]
    outer.swap(2, b)
    ids = inner_ids(outer)
    assert ids[1] == ids[3] == shared and ids[2] != shared
    assert outer.read() == FrozenMap({1: a, 2: b, 3: a})
    outer.remove([1, 3])
    assert outer.read() == FrozenMap({2: b})


def test_decoded_table_sorts_like_frozenmap(outer: PolicyMaps) -> None:
    entries = {
        PolicyKey(Direction.EGRESS, 5, PROTO_TCP, 1024, 6): PolicyEntry(3),
        PolicyKey(Direction.INGRESS, 70000, 17, 53, 16): PolicyEntry(4),
        PolicyKey(Direction.INGRESS, 2): PolicyEntry(5, deny=True),
        PolicyKey(Direction.INGRESS, 2, PROTO_TCP, 0, 0): PolicyEntry(6),
    }
    outer.swap(9, FrozenMap(entries))
    got = outer.read()[9]
    assert list(got.items()) == list(FrozenMap(entries).items())
    assert got == FrozenMap(entries) and got[PolicyKey(Direction.INGRESS, 2)] == PolicyEntry(5, True)
