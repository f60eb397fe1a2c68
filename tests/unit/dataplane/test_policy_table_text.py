"""decode_policy_table joins each map's canonical text while decoding: it must be exactly the
text nodestate.policy_map_text formats for a map of the same content."""

from __future__ import annotations

import random
from ipaddress import IPv4Address

from meshctl.dataplane.maps import (
    decode_endpoint,
    decode_endpoint_table,
    decode_policy_table,
    encode_endpoint,
    encode_policy,
)
from meshctl.nodestate import (
    PROTO_ANY,
    Direction,
    EndpointEntry,
    FrozenMap,
    PolicyEntry,
    PolicyKey,
    policy_map_text,
)


def _random_map(rng: random.Random) -> dict[PolicyKey, PolicyEntry]:
    out = {}
    for _ in range(rng.randrange(0, 120)):
        proto = rng.choice((PROTO_ANY, 6, 17, 132))
        direction = Direction(rng.randrange(2))
        ident = rng.randrange(0, 1 << 25)
        if proto == PROTO_ANY:
            key = PolicyKey(direction, ident)
        else:
            prefix = rng.randrange(0, 17)
            port = rng.randrange(1 << 16) & ~((1 << (16 - prefix)) - 1) & 0xFFFF
            key = PolicyKey(direction, ident, proto, port, prefix)
        out[key] = PolicyEntry(rng.randrange(1 << 32), rng.random() < 0.3)
    return out


def test_decoded_table_text_is_the_canonical_text() -> None:
    rng = random.Random(22)
    for _ in range(40):
        content = _random_map(rng)
        pairs = [encode_policy(k, v) for k, v in content.items()]
        rng.shuffle(pairs)  # kernel order is not key order
        table = decode_policy_table(b"".join(k for k, _ in pairs), b"".join(v for _, v in pairs))
        plain = FrozenMap(dict(content))  # fresh objects: text formatted by policy_map_text
        assert table == plain
        assert policy_map_text(table) == policy_map_text(plain)


def test_endpoint_table_equals_per_entry_decoding() -> None:
    rng = random.Random(5)
    entries = {
        IPv4Address(rng.randrange(1 << 32)): EndpointEntry(rng.randrange(1 << 16), rng.randrange(1 << 24),
                                                           rng.random() < 0.5, rng.random() < 0.5)
        for _ in range(300)
    }
    items = [encode_endpoint(a, e) for a, e in entries.items()]
    rng.shuffle(items)
    table, foreign = decode_endpoint_table(items)
    assert foreign == []
    plain = FrozenMap(dict(decode_endpoint(k, v) for k, v in items))
    assert table == plain and list(table.items()) == list(plain.items()) == sorted(entries.items())
    assert decode_endpoint_table([]) == (FrozenMap(), [])
