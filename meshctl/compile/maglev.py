"""Maglev consistent hashing (Eisenbud et al., NSDI'16) exactly as Cilium's pkg/maglev builds it.

Each backend key is hashed with MurmurHash3 x64_128 seeded by the first 4 bytes of the
base64 hash seed; h1 gives the offset and h2 the skip of the backend's permutation of the M
table slots. Backends take turns (in sorted key order, so the input order does not matter)
claiming their next free preferred slot until the table is full. Every node computes the same
table from the same keys, size and seed, so a flow keeps its backend whichever node it enters,
and removing one of N backends moves only about 1/N of the slots.

Weights follow Cilium (after Envoy's weighted Maglev): a backend's turn is skipped while
(n + 1) * weight is below its counter, and each turn it takes adds the weight sum to it. As in
Cilium, weights only take effect when sum(weights) // N > 1 (so [1, 1, 2] is unweighted).
"""

from __future__ import annotations

from collections.abc import Sequence

from meshctl.errors import CompileError
from meshctl.model.lbconfig import MAGLEV_PRIMES, maglev_seed_bytes

_M64 = 0xFFFFFFFFFFFFFFFF
_C1 = 0x87C37B91114253D5
_C2 = 0x4CF5AD432745937F


def _rotl(x: int, r: int) -> int:
    return ((x << r) | (x >> (64 - r))) & _M64


def _fmix(k: int) -> int:
    k ^= k >> 33
    k = (k * 0xFF51AFD7ED558CCD) & _M64
    k ^= k >> 33
    k = (k * 0xC4CEB9FE1A85EC53) & _M64
    return k ^ (k >> 33)


def murmur3_128(data: bytes, seed: int) -> tuple[int, int]:
    """MurmurHash3_x64_128 of `data` as (h1, h2), like Cilium's pkg/murmur3.Hash128."""
    h1 = h2 = seed & 0xFFFFFFFF
    n = len(data)
    blocks = n // 16
    for i in range(blocks):
        k1 = int.from_bytes(data[16 * i : 16 * i + 8], "little")
        k2 = int.from_bytes(data[16 * i + 8 : 16 * i + 16], "little")
        k1 = (_rotl((k1 * _C1) & _M64, 31) * _C2) & _M64
        h1 ^= k1
        h1 = (_rotl(h1, 27) + h2) & _M64
        h1 = (h1 * 5 + 0x52DCE729) & _M64
        k2 = (_rotl((k2 * _C2) & _M64, 33) * _C1) & _M64
        h2 ^= k2
        h2 = (_rotl(h2, 31) + h1) & _M64
        h2 = (h2 * 5 + 0x38495AB5) & _M64
    tail = data[16 * blocks :]
    if len(tail) > 8:
        k2 = int.from_bytes(tail[8:], "little")
        h2 ^= (_rotl((k2 * _C2) & _M64, 33) * _C1) & _M64
    if tail:
        k1 = int.from_bytes(tail[:8], "little")
        h1 ^= (_rotl((k1 * _C1) & _M64, 31) * _C2) & _M64
    h1 ^= n
    h2 ^= n
    h1 = (h1 + h2) & _M64
    h2 = (h2 + h1) & _M64
    h1 = _fmix(h1)
    h2 = _fmix(h2)
    h1 = (h1 + h2) & _M64
    h2 = (h2 + h1) & _M64
    return h1, h2


def offset_and_skip(key: str, table_size: int, seed: str) -> tuple[int, int]:
    """Where a backend's permutation starts and its stride (Cilium's getOffsetAndSkip)."""
    murmur_seed = int.from_bytes(maglev_seed_bytes(seed)[:4], "big")
    h1, h2 = murmur3_128(key.encode(), murmur_seed)
    return h1 % table_size, h2 % (table_size - 1) + 1


def maglev_table(
    backend_keys: Sequence[str], table_size: int, seed: str, weights: Sequence[int] | None = None
) -> tuple[int, ...]:
    """For every slot, the index into `backend_keys` of the backend that owns it.

    Empty keys give an empty table. CompileError for an unsupported size, a bad seed,
    duplicate keys or weights that do not fit.
    """
    if table_size not in MAGLEV_PRIMES:
        raise CompileError(
            f"Maglev table size {table_size} is not supported; use one of "
            f"{', '.join(map(str, MAGLEV_PRIMES))}"
        )
    try:
        murmur_seed = int.from_bytes(maglev_seed_bytes(seed)[:4], "big")
    except ValueError as err:
        raise CompileError(f"Maglev hash seed: {err}") from None
    if not backend_keys:
        return ()
    if len(set(backend_keys)) != len(backend_keys):
        raise CompileError("Maglev backend keys must be distinct")
    if weights is not None and (len(weights) != len(backend_keys) or any(w < 1 for w in weights)):
        raise CompileError("Maglev weights: one positive weight per backend")
    m = table_size
    order = sorted(range(len(backend_keys)), key=lambda i: backend_keys[i])
    n = len(order)
    offsets: list[int] = []
    skips: list[int] = []
    for i in order:
        h1, h2 = murmur3_128(backend_keys[i].encode(), murmur_seed)
        offsets.append(h1 % m)
        skips.append(h2 % (m - 1) + 1)
    nexts = [0] * n
    entry = [-1] * m
    w = [weights[i] for i in order] if weights is not None else None
    weight_sum = sum(w) if w is not None else n
    weighted = w is not None and weight_sum // n > 1
    counters = [wi / n for wi in w] if w is not None else []
    for slot_no in range(m):
        i = slot_no % n
        if weighted:
            assert w is not None
            while (slot_no + 1) * w[i] < int(counters[i]):
                i = (i + 1) % n
            counters[i] += weight_sum
        off, skip, j = offsets[i], skips[i], nexts[i]
        c = (off + j * skip) % m
        while entry[c] >= 0:
            j += 1
            c = (off + j * skip) % m
        entry[c] = i
        nexts[i] = j + 1
    return tuple(order[i] for i in entry)
