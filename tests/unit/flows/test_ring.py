"""The ringbuf consumer ABI (meshctl.flows.ring) over a fake ring made of bytearrays."""

from __future__ import annotations

import struct

from meshctl.flows.enrich import EVENT_SIZE, FRAMED_EVENT
from meshctl.flows.ring import BUSY_BIT, DISCARD_BIT, FRAME, PAGE, RingView

SIZE = 4096  # data area; the fake maps it twice like the kernel


class FakeRing:
    def __init__(self) -> None:
        self.cons = bytearray(PAGE)
        self.data = bytearray(PAGE + 2 * SIZE)
        self.prod = 0

    def put(self, body: bytes, word: int) -> int:
        """Write one record at the producer position; returns its position."""
        pos = self.prod
        rec = struct.pack("<II", word, 0) + body
        for i, b in enumerate(rec):  # both copies of the data area
            off = (pos + i) % SIZE
            self.data[PAGE + off] = self.data[PAGE + SIZE + off] = b
        self.prod += (len(rec) + 7) & ~7
        struct.pack_into("<Q", self.data, 0, self.prod)
        return pos

    def event(self, n: int, busy: bool = False, discard: bool = False) -> int:
        body = n.to_bytes(8, "little") + bytes(EVENT_SIZE - 8)
        return self.put(body, EVENT_SIZE | (BUSY_BIT if busy else 0) | (DISCARD_BIT if discard else 0))

    def commit(self, pos: int) -> None:
        for copy in (0, SIZE):
            at = PAGE + copy + pos % SIZE
            word = struct.unpack_from("<I", self.data, at)[0] & ~BUSY_BIT
            struct.pack_into("<I", self.data, at, word)


def stamps(frames: bytes) -> list[int]:
    return [rec[0] for rec in FRAMED_EVENT.iter_unpack(frames)]


def test_committed_records_come_back_in_order_and_advance_the_consumer() -> None:
    r = FakeRing()
    for n in range(1, 4):
        r.event(n)
    view = RingView(r.cons, r.data, SIZE)
    assert stamps(view.consume()) == [1, 2, 3]
    assert struct.unpack_from("<Q", r.cons, 0)[0] == 3 * FRAME
    assert view.consume() == b""


def test_stops_at_a_busy_record_and_resumes_after_commit() -> None:
    r = FakeRing()
    view = RingView(r.cons, r.data, SIZE)
    r.event(1)
    busy = r.event(2, busy=True)
    r.event(3)
    assert stamps(view.consume()) == [1]  # 3 is committed but after the busy one
    r.commit(busy)
    assert stamps(view.consume()) == [2, 3]


def test_discarded_and_foreign_records_are_skipped() -> None:
    r = FakeRing()
    view = RingView(r.cons, r.data, SIZE)
    r.event(1)
    r.event(2, discard=True)
    r.put(b"x" * 12, 12)  # some other record size
    r.event(4)
    assert stamps(view.consume()) == [1, 4]
    assert struct.unpack_from("<Q", r.cons, 0)[0] == r.prod


def test_records_that_wrap_around_the_end_are_whole() -> None:
    r = FakeRing()
    view = RingView(r.cons, r.data, SIZE)
    total = []
    for n in range(1, 200):  # 200 * 56 bytes: wraps the 4 KiB ring several times
        r.event(n)
        if n % 7 == 0:
            total += stamps(view.consume())
    total += stamps(view.consume())
    assert total == list(range(1, 200))
    assert view.max_backlog == 7 * FRAME
