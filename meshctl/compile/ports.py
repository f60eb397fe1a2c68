"""Port ranges as LPM prefixes: the policy map matches the first n bits of the destination port."""

from __future__ import annotations


def range_to_prefixes(first: int, last: int) -> list[tuple[int, int]]:
    """Split first..last (inclusive) into the fewest aligned (port, prefix_len) blocks.

    The datapath keys on a port prefix, so a range such as 80-90 becomes 80/13, 88/15, 90/16.
    """
    if not 0 <= first <= last <= 0xFFFF:
        raise ValueError(f"bad port range {first}-{last}")
    out: list[tuple[int, int]] = []
    port = first
    while port <= last:
        size_bits = 16
        # grow the block while it stays aligned and inside the range
        while size_bits > 0:
            host = 16 - (size_bits - 1)
            block = 1 << host
            if port % block or port + block - 1 > last:
                break
            size_bits -= 1
        out.append((port, size_bits))
        port += 1 << (16 - size_bits)
    return out
