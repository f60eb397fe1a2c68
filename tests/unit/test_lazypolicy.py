"""Lazy policy maps and the map cache, without the kernel: digests, on-demand decode, the file."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from meshctl.dataplane.maps import decode_policy_table, encode_policy
from meshctl.lazypolicy import CompiledPolicyMap, LazyPolicyMap, maps_equal, text_sha
from meshctl.nodestate import (
    PROTO_TCP,
    Direction,
    FrozenMap,
    NodeState,
    PolicyEntry,
    PolicyKey,
    policy_map_text,
)
from meshctl.observe import mapcache
from meshctl.observe.mapcache import MapCache, raw_sha
from meshctl.observe.parse import parse_node
from meshctl.observe.raw import RawNode

ENTRIES = {
    PolicyKey(Direction.INGRESS, 300, PROTO_TCP, 80, 16): PolicyEntry(7),
    PolicyKey(Direction.EGRESS, 2): PolicyEntry(8, deny=True),
}


def _dump(entries: dict[PolicyKey, PolicyEntry]) -> tuple[bytes, bytes]:
    pairs = [encode_policy(k, v) for k, v in reversed(list(entries.items()))]  # kernel order: any
    return b"".join(k for k, _ in pairs), b"".join(v for _, v in pairs)


def _lazy(entries: dict[PolicyKey, PolicyEntry], sha: str | None = None) -> LazyPolicyMap:
    keys, values = _dump(entries)
    sha = sha or text_sha(policy_map_text(FrozenMap(entries)))
    return LazyPolicyMap(keys, values, len(entries), sha, decode_policy_table)


def test_a_lazy_map_equal_by_digest_is_not_decoded_and_takes_the_text() -> None:
    lazy, compiled = _lazy(ENTRIES), FrozenMap(ENTRIES)
    assert maps_equal(lazy, compiled)
    assert lazy.pending and len(lazy) == 2
    assert policy_map_text(lazy) == policy_map_text(compiled) and lazy.pending


def test_a_lazy_map_decodes_when_read_and_equals_the_full_decode() -> None:
    lazy = _lazy(ENTRIES)
    assert dict(lazy) == ENTRIES and not lazy.pending
    assert lazy == FrozenMap(ENTRIES) and hash(lazy) == hash(FrozenMap(ENTRIES))
    assert policy_map_text(lazy) == policy_map_text(FrozenMap(ENTRIES))


def test_a_different_digest_is_unequal_and_reading_shows_the_real_entries() -> None:
    other = {**ENTRIES, PolicyKey(Direction.EGRESS, 2): PolicyEntry(8, deny=False)}
    lazy = _lazy(ENTRIES)
    assert not maps_equal(lazy, FrozenMap(other))
    assert lazy != FrozenMap(other) and dict(lazy) == ENTRIES


def test_parse_with_a_cache_learns_then_goes_lazy_with_identical_fingerprints() -> None:
    dump = _dump(ENTRIES)
    raw = RawNode("n1", loaded=True, policies={1: dump, 2: dump})
    cache = MapCache()
    full = parse_node(raw, cache)
    assert cache.learned == 1 and cache.get(raw_sha(*dump)) == text_sha(policy_map_text(FrozenMap(ENTRIES)))
    lazy = parse_node(raw, cache)
    assert isinstance(lazy.policies[1], LazyPolicyMap) and lazy.policies[1] is lazy.policies[2]
    intended = NodeState("n1", policies=FrozenMap({1: FrozenMap(ENTRIES), 2: FrozenMap(ENTRIES)}))
    assert maps_equal(lazy.policies[1], intended.policies[1])
    assert lazy.fingerprint() == full.fingerprint() == intended.fingerprint()
    assert lazy.policies[1].pending


def test_the_cache_file_round_trips_and_ignores_foreign_or_broken_files(tmp_path: Path) -> None:
    path = tmp_path / "c" / mapcache.FILE
    cache = mapcache.load(path)
    assert cache.known == {}
    cache.learn("raw1", "text1")
    cache.save()
    assert mapcache.load(path).get("raw1") == "text1"
    path.write_text(json.dumps({"format": "something-else/9", "maps": {"raw1": "x"}}))
    assert mapcache.load(path).known == {}
    path.write_text("{not json")
    assert mapcache.load(path).known == {}


def test_the_cache_keeps_the_newest_entries(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    path = tmp_path / mapcache.FILE
    cache = mapcache.load(path)
    for i in range(5):
        cache.learn(f"r{i}", f"t{i}")
    monkeypatch.setattr(mapcache, "MAX_ENTRIES", 3)
    cache.save()
    assert list(mapcache.load(path).known) == ["r2", "r3", "r4"]



def _compiled(entries: dict[PolicyKey, PolicyEntry]) -> CompiledPolicyMap:
    order = sorted(entries)
    keys = [(int(k.direction), k.identity, k.protocol, k.port, k.port_prefix) for k in order]
    return CompiledPolicyMap(keys, [entries[k] for k in order])


@pytest.mark.parametrize("first_read", ["text", "values", "items", "len", "eq", "hash"])
def test_a_compiled_map_is_the_frozen_map_of_its_entries_whatever_is_read_first(first_read: str) -> None:
    plain = FrozenMap(ENTRIES)
    compiled = _compiled(ENTRIES)
    reads = {
        "text": lambda m: policy_map_text(m),
        "values": lambda m: list(m.values()),
        "items": lambda m: list(m.items()),
        "len": len,
        "eq": lambda m: m == FrozenMap(ENTRIES),
        "hash": hash,
    }
    assert reads[first_read](compiled) == reads[first_read](plain)
    assert policy_map_text(compiled) == policy_map_text(plain)  # byte-identical text
    assert compiled == plain and plain == compiled and hash(compiled) == hash(plain)
    assert list(compiled.items()) == list(plain.items()) and list(compiled.values()) == list(plain.values())
    assert compiled[PolicyKey(Direction.EGRESS, 2)] == PolicyEntry(8, deny=True) and len(compiled) == 2
    assert _compiled({**ENTRIES, PolicyKey(Direction.EGRESS, 3): PolicyEntry(8)}) != plain


def test_compiled_keys_are_the_shared_interned_objects_observe_decodes_into() -> None:
    compiled = _compiled(ENTRIES)
    decoded = decode_policy_table(*_dump(ENTRIES))
    assert all(a is b for a, b in zip(compiled, decoded, strict=True))
