"""What a change of a service's backend selection means for its connections, in one line.

A Maglev table holds thousands of slots, each naming a backend; printed as data it is kilobytes
of base64 that nobody can read. What decides how many connections break is how many slots
change owner, and what decides load is the share of slots per backend, so the plan says those.
A service without a table selects among its backend slots at random: each backend's share is
its count of slots there, and no slot "moves" between two such selections (every new flow is
drawn again anyway).
"""

from __future__ import annotations

from collections import Counter
from collections.abc import Callable

MAX_BACKENDS_SHOWN = 6  # the rest is counted, so a line stays readable with hundreds of backends


def shares(table: tuple[int, ...], backends: tuple[int, ...]) -> dict[int, float]:
    """Backend id -> share of selection (0..1): from the Maglev table, else from the slot list."""
    picks = table or backends
    if not picks:
        return {}
    counts = Counter(picks)
    return {b: n / len(picks) for b, n in counts.items()}


def moved_slots(before: tuple[int, ...], after: tuple[int, ...]) -> int | None:
    """Slots of two tables of the same size whose backend differs; None if they cannot compare."""
    if not before or not after or len(before) != len(after):
        return None
    return sum(1 for x, y in zip(before, after, strict=True) if x != y)


def _pct(share: float) -> str:
    return f"{share * 100:.1f}%"


def _shape(table: tuple[int, ...]) -> str:
    return f"Maglev {len(table)} slots" if table else "random"


def selection_summary(
    before: tuple[tuple[int, ...], tuple[int, ...]] | None,
    after: tuple[tuple[int, ...], tuple[int, ...]] | None,
    label: Callable[[int], str],
) -> str:
    """One line for people: table shape, slots that move, share per backend before -> after.

    before/after: (backend slot list, Maglev table) or None for an absent service; label names a
    backend id ("10.101.2.7:3000/TCP"). Backends are listed by how much their share changes.
    """
    b_slots, b_table = before or ((), ())
    a_slots, a_table = after or ((), ())
    parts = []
    shape_b, shape_a = _shape(b_table), _shape(a_table)
    if before is None:
        parts.append(shape_a)
    elif after is None:
        parts.append(shape_b)
    else:
        parts.append(shape_a if shape_a == shape_b else f"{shape_b} -> {shape_a}")
        moved = moved_slots(b_table, a_table)
        if moved is not None:
            share = moved / len(a_table) * 100
            parts[-1] += f", {moved} of {len(a_table)} slots ({share:.1f}%) change backend"
        elif b_table or a_table:
            parts[-1] += ", every connection is selected again"
    sb, sa = shares(b_table, b_slots) if before else {}, shares(a_table, a_slots) if after else {}
    ids = sorted({*sb, *sa}, key=lambda i: (-abs(sa.get(i, 0.0) - sb.get(i, 0.0)), label(i)))
    rows = []
    for i in ids[:MAX_BACKENDS_SHOWN]:
        if before is None or after is None:
            rows.append(f"{label(i)} {_pct(sa.get(i, 0.0) if after else sb.get(i, 0.0))}")
        else:
            rows.append(f"{label(i)} {_pct(sb.get(i, 0.0))} -> {_pct(sa.get(i, 0.0))}")
    if len(ids) > MAX_BACKENDS_SHOWN:
        rows.append(f"{len(ids) - MAX_BACKENDS_SHOWN} more backends")
    if rows:
        parts.append("share per backend: " + ", ".join(rows))
    return "; ".join(parts)
