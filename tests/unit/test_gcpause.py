"""paused_gc: the bulk work's survivors leave the young generation, and cycles are still collected."""

from __future__ import annotations

import gc

from meshctl.gcpause import paused_gc


def _in_generation(obj: object, generation: int) -> bool:
    return any(o is obj for o in gc.get_objects(generation))


def test_survivors_of_the_pause_go_to_the_oldest_generation() -> None:
    assert gc.isenabled()
    with paused_gc():
        assert not gc.isenabled()
        rows = [[i] for i in range(10_000)]  # tracked containers, as a compile makes
    assert gc.isenabled()
    # Left young, the next collection would walk every one of them (and the one after again).
    assert gc.get_count()[0] < 100
    assert not _in_generation(rows[5_000], 0) and _in_generation(rows[5_000], 2)


def test_a_nested_pause_resumes_nothing_and_cycles_are_still_collected() -> None:
    with paused_gc():
        with paused_gc():
            pass
        assert not gc.isenabled()  # only the outermost pause resumes the collector
        cycle: list[object] = []
        cycle.append(cycle)
    del cycle
    assert gc.collect() >= 1  # promoted, not frozen: the garbage cycle is found
