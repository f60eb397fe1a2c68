"""Port ranges as LPM blocks: an exact, aligned, disjoint cover of the range."""

from __future__ import annotations

from itertools import pairwise

from hypothesis import given, settings
from hypothesis import strategies as st

from meshctl.compile.ports import range_to_prefixes


@settings(max_examples=300, deadline=None)
@given(st.integers(0, 65535), st.integers(0, 65535))
def test_blocks_cover_the_range_exactly(a: int, b: int) -> None:
    first, last = min(a, b), max(a, b)
    blocks = range_to_prefixes(first, last)
    covered = []
    for port, plen in blocks:
        size = 1 << (16 - plen)
        assert port % size == 0  # aligned: the datapath masks the low bits
        covered.append((port, port + size - 1))
    assert covered[0][0] == first and covered[-1][1] == last
    assert all(hi + 1 == lo for (_, hi), (lo, _) in pairwise(covered))
    assert len(blocks) <= 30  # at most two blocks per prefix length
