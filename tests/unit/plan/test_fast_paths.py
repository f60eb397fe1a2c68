"""The fast paths of plan making give exactly what the plain definitions give."""

from __future__ import annotations

import hashlib
import json
import sys
from dataclasses import replace
from ipaddress import IPv4Address
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[2] / "golden"))
from golden_scenario import intended, observed

from meshctl.app.increment.stubs import RowsSet
from meshctl.nodestate import (
    Attachment,
    EndpointEntry,
    FrozenMap,
    NodeState,
    PatchedMap,
    _endpoints_text,
    patched,
    patched_keys,
    policy_map_text,
)
from meshctl.plan import diff_node


def _merkle(state: NodeState) -> dict[str, object]:
    """canonical() with each policy map's rows replaced by the sha256 of their compact JSON."""
    body = state.canonical()
    body["policies"] = [
        [ep, hashlib.sha256(json.dumps(rows, separators=(",", ":")).encode()).hexdigest()]
        for ep, rows in body["policies"]
    ]
    return body


def test_fingerprint_is_sha256_of_the_canonical_json_with_map_digests() -> None:
    audited = intended()["node-2"]
    audited = replace(audited, endpoints=FrozenMap(
        {ip: replace(e, audit_ingress=True) for ip, e in audited.endpoints.items()}))
    assert audited.fingerprint() != intended()["node-2"].fingerprint()  # the audit flags count
    assert NodeState.from_canonical(audited.canonical()) == audited
    for states in (observed(), intended(), {"audited": audited}):
        for state in [*states.values(), NodeState("empty")]:
            body = json.dumps(_merkle(state), sort_keys=True, separators=(",", ":"))
            assert state.fingerprint() == "sha256:" + hashlib.sha256(body.encode()).hexdigest()


def test_policy_map_text_tells_equal_maps_from_different_ones() -> None:
    want = intended()["node-2"]
    for entries in want.policies.values():
        copy = FrozenMap(dict(entries))  # other objects, same content
        assert policy_map_text(copy) == policy_map_text(entries)
        assert json.loads(policy_map_text(entries)) == next(
            rows for ep, rows in want.canonical()["policies"] if want.policies[ep] is entries
        )


def test_diff_with_a_shared_memo_equals_fresh_diffs() -> None:
    obs, want = observed(), intended()
    memo: dict[tuple[int, int], bool] = {}
    for node in want:
        assert diff_node(obs[node], want[node], None, memo) == diff_node(obs[node], want[node])


def _flipped(state: NodeState, count: int) -> dict[object, EndpointEntry]:
    """New entries (enforcement flipped) for the first `count` endpoints of `state`."""
    return {ip: replace(e, enforce_ingress=not e.enforce_ingress)
            for ip, e in list(state.endpoints.items())[:count]}


def test_a_patched_map_is_the_map_it_stands_for() -> None:
    base = intended()["node-2"].endpoints
    values = _flipped(intended()["node-2"], 1)
    patched_map = patched(base, values)
    plain = FrozenMap({**dict(base.items()), **values})
    assert isinstance(patched_map, PatchedMap)
    assert patched_map == plain and list(patched_map.items()) == list(plain.items())
    assert len(patched_map) == len(plain) and all(patched_map[k] == plain[k] for k in plain)
    assert _endpoints_text(patched_map) == _endpoints_text(plain)
    assert patched(base, {}) is base
    new_key = {IPv4Address("10.250.0.1"): next(iter(values.values()))}
    assert not isinstance(patched(base, new_key), PatchedMap)  # a key it lacks: a plain map
    assert patched(base, new_key) == FrozenMap({**dict(base.items()), **new_key})
    gone = next(iter(values))
    assert patched(base, {gone: None}) == FrozenMap({k: v for k, v in base.items() if k != gone})


def test_the_diff_of_patches_of_one_base_is_the_full_diff() -> None:
    want = intended()["node-2"]
    base = want.endpoints
    one, two = _flipped(want, 1), _flipped(want, 2)
    assert len(two) == 2
    sides = [(base, patched(base, one)), (patched(base, two), base), (patched(base, one), patched(base, two))]
    for before, after in sides:
        assert patched_keys(before, after) is not None
        fast = diff_node(replace(want, endpoints=before), replace(want, endpoints=after))
        plain = diff_node(replace(want, endpoints=FrozenMap(dict(before.items()))),
                          replace(want, endpoints=FrozenMap(dict(after.items()))))
        assert fast == plain and fast  # the same changes, and there are some
    assert patched_keys(base, FrozenMap(dict(base.items()))) is None  # unrelated maps: every key


def test_a_set_made_on_first_read_is_the_set_it_stands_for() -> None:
    members = intended()["node-2"].attachments
    made: list[int] = []

    def make() -> list[Attachment]:
        made.append(1)
        return list(members)

    lazy = RowsSet(make, len(members))
    assert len(lazy) == len(members) and not made  # the size is known without the members
    other = RowsSet(lambda: list(members), len(members))
    assert lazy == members and members == lazy and lazy == other
    assert lazy - members == frozenset() and members - lazy == frozenset()
    some = frozenset(list(members)[:1])
    assert lazy - some == members - some and isinstance(lazy - some, frozenset)
    assert all(a in lazy for a in members) and made == [1]  # made once
