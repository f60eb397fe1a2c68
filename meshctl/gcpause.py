"""Pause Python's cyclic garbage collector around bulk work that makes only acyclic objects.

Observe and diff build millions of small tuples and dataclasses at scale; each generation-0
collection then walks the young objects and every third one the older, so collections
triggered by pure allocation cost seconds over a compiled cluster state. Reference counting
still frees everything; the collector resumes afterwards.
"""

from __future__ import annotations

import gc
from collections.abc import Iterator
from contextlib import contextmanager


@contextmanager
def paused_gc() -> Iterator[None]:
    """`with paused_gc():` around bulk work, or `@paused_gc()` on a function that is all bulk work."""
    was = gc.isenabled()
    gc.disable()
    try:
        yield
    finally:
        if was:
            gc.enable()
