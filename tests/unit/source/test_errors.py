"""Every broken input under data/ fails with one SourceError naming file:line: field: message.

Each data file starts with `# expect: <prefix of the message>`; the prefix pins the file, the
line and the field path, so a regression in line mapping fails here.
"""

from __future__ import annotations

from pathlib import Path

import pytest

from meshctl.errors import SourceError
from meshctl.source.documents import Documents, add_document
from meshctl.source.yamlines import load_documents

DATA = Path(__file__).parent / "data"
CASES = sorted(DATA.glob("*.yaml"))


def _expected(path: Path) -> str:
    first = path.read_text().splitlines()[0]
    assert first.startswith("# expect: "), f"{path.name} lacks an expect header"
    return first.removeprefix("# expect: ")


def load_text(text: str, file: str) -> Documents:
    out = Documents()
    for doc in load_documents(text, file):
        add_document(doc, out)
    return out


def test_there_are_cases() -> None:
    assert len(CASES) >= 30


@pytest.mark.parametrize("path", CASES, ids=[p.stem for p in CASES])
def test_broken_input(path: Path) -> None:
    with pytest.raises(SourceError) as info:
        load_text(path.read_text(), path.name)
    message = str(info.value)
    assert message.startswith(_expected(path)), message
    assert "\n" not in message and "Traceback" not in message
    assert info.value.file == path.name
    assert info.value.line is not None
