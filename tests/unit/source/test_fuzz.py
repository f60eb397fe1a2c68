"""Bad-input fuzz: every example document, mutated, is loaded and compiled by the real CLI.

Each hypothesis example takes one document of an example repo (in a private copy), mutates it
the same way whichever document it is (a value replaced by an odd one, a key dropped, renamed or
added, a list item dropped or doubled, a line cut or a character inserted), and runs
`meshctl policy trace -C COPY --batch EMPTY`, which loads and compiles the repo and traces
nothing. The CLI must exit 0 or 1, never show a traceback or an internal error, and every
rejection must name a file of the repo and a line. `MESHCTL_FUZZ_EXAMPLES` scales the runs.
"""

from __future__ import annotations

import contextlib
import io
import os
import re
import shutil
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
import yaml
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from meshctl.cli.main import main

EXAMPLES = Path(__file__).resolve().parents[3] / "examples"
REPOS = ("three-tier", "production", "services")
# production-changes holds the pull request of the production war story: fuzz it in place.
EXTRA = {"production": [EXAMPLES / "production-changes" / "database-security.yaml"]}
PER_DOCUMENT = int(os.environ.get("MESHCTL_FUZZ_EXAMPLES", "8"))
REJECTION = re.compile(r"^Error: (?P<file>[^:\s]+):(?P<line>\d+): ")

ODD_VALUES: list[Any] = [
    None, [], {}, 0, -1, 65536, 70000, 2**64, 1.5, True, "", " ", "*", "x" * 300, "10.0.0.0/33",
    "::1", "TCP", "0", "-", {"a": [1]}, [[]], [{}], ["a", None], {"": ""}, {"k8s:app": None},
]


def documents() -> list[tuple[str, str, int]]:
    """(repo, file relative to the repo, document index) of every example document."""
    out = []
    for repo in REPOS:
        root = EXAMPLES / repo
        files = sorted(p.relative_to(root).as_posix() for p in root.rglob("*.yaml"))
        files += [f"policies/{p.name}" for p in EXTRA.get(repo, [])]
        for rel in files:
            source = root / rel if (root / rel).exists() else next(p for p in EXTRA[repo] if p.name in rel)
            count = sum(1 for d in yaml.safe_load_all(source.read_text()) if d is not None)
            out += [(repo, rel, i) for i in range(count)]
    return out


DOCUMENTS = documents()


@pytest.fixture(scope="module")
def copies(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Path]:
    """A private copy of each example repo (production with its pending change)."""
    base = tmp_path_factory.mktemp("fuzz")
    for repo in REPOS:
        shutil.copytree(EXAMPLES / repo, base / repo, ignore=shutil.ignore_patterns("state", "plans"))
        for extra in EXTRA.get(repo, []):
            shutil.copy(extra, base / repo / "policies" / extra.name)
    (base / "empty.jsonl").write_text("")
    yield base


def paths(node: Any, prefix: tuple[Any, ...] = ()) -> list[tuple[Any, ...]]:
    """Every path into a YAML value (mapping keys and list indexes), the root excluded."""
    out: list[tuple[Any, ...]] = []
    items = node.items() if isinstance(node, dict) else enumerate(node) if isinstance(node, list) else ()
    for key, value in items:
        out.append((*prefix, key))
        out += paths(value, (*prefix, key))
    return out


@st.composite
def mutation(draw: st.DrawFn, doc: Any) -> Any:
    """`doc` with one structural change (a deep copy: the original stays)."""
    import copy

    doc = copy.deepcopy(doc)
    where = paths(doc)
    path = draw(st.sampled_from(where)) if where else ()
    parent = doc
    for key in path[:-1]:
        parent = parent[key]
    last = path[-1] if path else None
    op = draw(st.sampled_from(["replace", "drop", "rename", "add", "double"]))
    if last is None:
        return draw(st.sampled_from(ODD_VALUES))
    if op == "replace":
        parent[last] = draw(st.sampled_from(ODD_VALUES) | st.text(max_size=12) | st.integers())
    elif op == "drop":
        del parent[last]
    elif op == "rename" and isinstance(parent, dict):
        new = draw(st.sampled_from([last[:-1], last + "s", last.upper(), "description", "spec", "kind"])
                   | st.text(min_size=1, max_size=10))
        value = parent.pop(last)
        parent.setdefault(new, value)
    elif op == "add" and isinstance(parent, dict):
        parent.setdefault(draw(st.text(min_size=1, max_size=10)), draw(st.sampled_from(ODD_VALUES)))
    elif op == "double" and isinstance(parent, list):
        parent.insert(last, copy.deepcopy(parent[last]))
    else:
        parent[last] = draw(st.sampled_from(ODD_VALUES))
    return doc


def text_mutation(draw: st.DrawFn, text: str) -> str:
    """Cut one line or insert one character: YAML that may no longer parse."""
    lines = text.splitlines(keepends=True)
    if draw(st.booleans()) and lines:
        del lines[draw(st.integers(0, len(lines) - 1))]
        return "".join(lines)
    at = draw(st.integers(0, len(text)))
    return text[:at] + draw(st.sampled_from(list(":-[]{}'\"#&*!|> \t\n%@`"))) + text[at:]


def run_cli(root: Path, batch: Path) -> tuple[int, str]:
    err = io.StringIO()
    with contextlib.redirect_stdout(io.StringIO()), contextlib.redirect_stderr(err):
        try:
            main(["policy", "trace", "-C", str(root), "--batch", str(batch)])
        except SystemExit as exit_:
            code = exit_.code
        else:
            code = 0
    return (code if isinstance(code, int) else 1), err.getvalue()


@pytest.mark.parametrize(("repo", "rel", "index"), DOCUMENTS,
                         ids=[f"{r}/{f}#{i}" for r, f, i in DOCUMENTS])
@settings(max_examples=PER_DOCUMENT, deadline=None, derandomize=True,
          suppress_health_check=[HealthCheck.function_scoped_fixture, HealthCheck.too_slow])
@given(data=st.data())
def test_mutated_document_is_accepted_or_rejected_with_file_and_line(
    copies: Path, repo: str, rel: str, index: int, data: st.DataObject
) -> None:
    root = copies / repo
    path = root / rel
    original = path.read_text()
    docs = [d for d in yaml.safe_load_all(original) if d is not None]
    if data.draw(st.integers(0, 4), label="text level") == 0:
        text = text_mutation(data.draw, original)
    else:
        docs[index] = data.draw(mutation(docs[index]), label="document")
        text = yaml.safe_dump_all(docs, sort_keys=False)
    try:
        path.write_text(text)
        code, stderr = run_cli(root, copies / "empty.jsonl")
    finally:
        path.write_text(original)
    assert code in (0, 1), stderr
    assert "Traceback" not in stderr and "internal error" not in stderr, stderr
    if code == 1:
        first = stderr.strip().splitlines()[0]
        m = REJECTION.match(first)
        assert m, f"rejection without file:line: {first}"
        assert (root / m["file"]).is_file(), first


def test_every_example_document_is_fuzzed() -> None:
    assert len(DOCUMENTS) >= 35
    kinds = {yaml.safe_load_all((EXAMPLES / r / f).read_text()).__next__()["kind"]
             for r, f, _ in DOCUMENTS if (EXAMPLES / r / f).exists()}
    assert {"Namespace", "Pod", "CiliumNetworkPolicy", "Service", "ConnectivityCheck"} <= kinds


def test_the_reported_crashes_are_clean_rejections(copies: Path) -> None:
    """kind: [] and kind: {} raised TypeError (unhashable type) in source/documents.py."""
    path = copies / "three-tier" / "policies" / "default-deny.yaml"
    original = path.read_text()
    try:
        for odd in ("[]", "{}"):
            path.write_text(re.sub(r"^kind: .*$", f"kind: {odd}", original, count=1, flags=re.M))
            code, stderr = run_cli(copies / "three-tier", copies / "empty.jsonl")
            assert code == 1
            assert stderr.strip() == (
                f"Error: policies/default-deny.yaml:4: kind: expected a kind name such as "
                f"NetworkPolicy (got {odd})"
            )
    finally:
        path.write_text(original)
