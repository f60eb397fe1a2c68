"""The revert stack undoes in reverse order and survives failing undo steps."""

from __future__ import annotations

import pytest

from meshctl.apply.revert import RevertStack


def test_reverts_in_reverse_order() -> None:
    log: list[str] = []
    stack = RevertStack()
    for name in ("a", "b", "c"):
        stack.push(f"undo {name}", lambda n=name: log.append(n))
    assert stack.descriptions == ["undo a", "undo b", "undo c"]
    assert stack.revert() == []
    assert log == ["c", "b", "a"]
    assert len(stack) == 0


def test_failing_undo_does_not_stop_others() -> None:
    log: list[str] = []
    stack = RevertStack()
    stack.push("first", lambda: log.append("first"))

    def boom() -> None:
        raise RuntimeError("map gone")

    stack.push("second", boom)
    stack.push("third", lambda: log.append("third"))
    failures = stack.revert()
    assert log == ["third", "first"]
    assert [f.description for f in failures] == ["second"]
    assert "map gone" in str(failures[0])


def test_clear_makes_steps_permanent_and_extend_adopts() -> None:
    log: list[str] = []
    outer, inner = RevertStack(), RevertStack()
    outer.push("o", lambda: log.append("o"))
    inner.push("i", lambda: log.append("i"))
    outer.extend(inner)
    assert len(inner) == 0
    outer.revert()
    assert log == ["i", "o"]
    outer.push("x", lambda: log.append("x"))
    outer.clear()
    assert outer.revert() == []
    assert log == ["i", "o"]


@pytest.mark.parametrize("n", [0, 1, 5])
def test_revert_empty_or_many(n: int) -> None:
    seen: list[int] = []
    stack = RevertStack()
    for i in range(n):
        stack.push(str(i), lambda i=i: seen.append(i))
    stack.revert()
    assert seen == list(reversed(range(n)))
