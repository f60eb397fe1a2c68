"""Long or opaque values read as a length and digest in text and markdown, in full in JSON."""

from __future__ import annotations

import hashlib
import json

from rich.text import Text

from meshctl.plan.action import Action
from meshctl.plan.change import Change, ChangeKind
from meshctl.report.fields import value_lines
from meshctl.report.plan_text import MAX_LINE, _put

LONG = "x" * 250


def _change(before: object, after: object) -> Change:
    return Change("node-1", ChangeKind.WIREGUARD, None, "node-1 wireguard", Action.UPDATE,
                  {"sources": before, "listen_port": 1}, {"sources": after, "listen_port": 2})


def test_a_value_over_200_characters_is_a_length_and_digest() -> None:
    lines = value_lines(_change("short", LONG))
    digest = hashlib.sha256(f'"{LONG}"'.encode()).hexdigest()[:12]
    assert lines == ["listen_port: 1 -> 2", f'sources: "short" -> <252 characters, sha256:{digest}>']
    assert json.dumps(_change("short", LONG).to_json()).count(LONG) == 1  # JSON keeps it whole


def test_a_value_of_200_characters_is_shown() -> None:
    value = "y" * 198  # 200 with its quotes
    assert value_lines(_change("a", value))[1] == f'sources: "a" -> "{value}"'


def test_long_lines_wrap_below_the_limit_and_keep_their_marker() -> None:
    out = Text()
    words = " ".join(f"word{i}" for i in range(200))
    _put(out, "        # ", words)
    lines = out.plain.splitlines()
    assert len(lines) > 1 and all(len(line) <= MAX_LINE for line in lines)
    assert all(line.startswith("        # ") for line in lines)
    assert " ".join(line.strip(" #") for line in lines) == words
