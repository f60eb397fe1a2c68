"""The agent's ring buffer reader: the BPF ringbuf read through mmap, no per-record callback.

libbpf's ring_buffer__poll calls back into Python once per record through ctypes (a few us
each): at 100k events/s that alone fills a core. The kernel ringbuf ABI is simple enough to
read directly (linux/bpf.h, kernel/bpf/ringbuf.c):
- page 0 (read-write): the consumer position (u64); page 1: the producer position (u64);
  then the data area, mapped twice back to back, so a record that wraps is still contiguous;
- each record: u32 len (bit 31 BUSY = reserved not committed yet, bit 30 DISCARD), u32 page
  offset, then len bytes, padded to 8.
`poll()` copies everything between consumer and producer with one slice and hands it back
framed (header + record, 56 bytes for a struct flow_event); headers are checked in bulk with
strided byte slices (C speed), records are decoded by one `iter_unpack` in meshctl.flows.enrich.
"""

from __future__ import annotations

import mmap
import select
import struct

from meshctl.dataplane.libbpf import Map
from meshctl.errors import DataplaneError
from meshctl.flows.enrich import EVENT_SIZE

PAGE = mmap.PAGESIZE
BUSY_BIT, DISCARD_BIT = 1 << 31, 1 << 30
HEADER = 8
FRAME = HEADER + EVENT_SIZE  # 56: a flow_event record with its header (already 8-aligned)
_POS = struct.Struct("<Q")
_LEN = struct.Struct("<I")


def committed_prefix(chunk: bytes) -> tuple[bytes, int]:
    """(framed flow events, bytes consumed) of a chunk copied from the ring.

    Fast path: every header says "48 bytes, committed" (low byte 48, other three 0). Otherwise
    walk the headers: stop at the first BUSY record (not written yet), skip DISCARDed ones
    and records of any other size.
    """
    n = len(chunk) - len(chunk) % FRAME
    count = n // FRAME
    if (chunk[0:n:FRAME] == bytes((EVENT_SIZE,)) * count and not chunk[1:n:FRAME].strip(b"\0")
            and not chunk[2:n:FRAME].strip(b"\0") and not chunk[3:n:FRAME].strip(b"\0")
            and n == len(chunk)):
        return chunk, n
    parts: list[bytes] = []
    pos = 0
    while pos + HEADER <= len(chunk):
        (word,) = _LEN.unpack_from(chunk, pos)
        if word & BUSY_BIT:
            break
        size = word & ~(BUSY_BIT | DISCARD_BIT)
        if not word & DISCARD_BIT and size == EVENT_SIZE:
            parts.append(chunk[pos:pos + FRAME])
        pos += (HEADER + size + 7) & ~7
    return b"".join(parts), min(pos, len(chunk))


class MmapRing:
    """One consumer of a BPF_MAP_TYPE_RINGBUF map (there must be only one)."""

    def __init__(self, ringbuf: Map) -> None:
        self._map = ringbuf  # keeps the fd open
        self.label = ringbuf.label
        size = ringbuf.max_entries
        self._mask = size - 1
        self.size = size
        self.max_backlog = 0  # bytes: how close the ring came to full (and dropping)
        try:
            self._cons = mmap.mmap(ringbuf.fd, PAGE, mmap.MAP_SHARED, mmap.PROT_READ | mmap.PROT_WRITE)
            self._data = mmap.mmap(ringbuf.fd, PAGE + 2 * size, mmap.MAP_SHARED, mmap.PROT_READ, offset=PAGE)
            self._poll = select.epoll()
            self._poll.register(ringbuf.fd, select.EPOLLIN)
        except OSError as err:
            raise DataplaneError("map ring buffer", self.label, err.errno or 0) from err

    def consume(self) -> bytes:
        """Every committed record now in the ring (framed), without waiting."""
        cons = _POS.unpack_from(self._cons, 0)[0]
        prod = _POS.unpack_from(self._data, 0)[0]
        if prod <= cons:
            return b""
        if prod - cons > self.max_backlog:
            self.max_backlog = prod - cons
        start = PAGE + (cons & self._mask)
        frames, used = committed_prefix(self._data[start:start + (prod - cons)])
        if used:
            _POS.pack_into(self._cons, 0, cons + used)  # x86: a plain store is a release
        return frames

    def poll(self, timeout_ms: int) -> bytes:
        """Records already there, else wait up to timeout_ms for the kernel's wakeup."""
        out = self.consume()
        if out:
            return out
        try:
            self._poll.poll(timeout_ms / 1000.0)
        except InterruptedError:
            return b""
        return self.consume()

    def close(self) -> None:
        self._poll.close()
        self._cons.close()
        self._data.close()
        self._map.close()
