"""The package layering of the README's "How it works" holds for every import.

Every import is walked, those inside functions and under TYPE_CHECKING included: a lower layer
never imports a higher one, no two packages import each other (directly or around a cycle), and
the lab is read by the backend alone (and built by the `meshctl lab` commands). The table is
the README's: a new package must be placed there before it can import anything.
"""

from __future__ import annotations

import ast
import re
from collections.abc import Iterator
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[2]
PACKAGE = ROOT / "meshctl"
LAB_READERS = {"backend", "cli"}  # the lab is built by `meshctl lab` and read through the backend


def readme_layers(text: str) -> list[list[str]]:
    """The rows of the README's layer table, lowest first: the package names of each row."""
    block = re.search(r"<!-- layers -->\s*```\n(.*?)```", text, re.S)
    assert block, 'README.md has no "<!-- layers -->" table'
    rows = []
    for line in block.group(1).splitlines():
        names = re.split(r"\s{2,}", line.strip(), maxsplit=1)[0]
        if names and not line.startswith(" "):
            rows.append(names.split())
    return rows


def top_level_names() -> set[str]:
    """Packages and top-level modules of meshctl (the nodes of the layer graph)."""
    out = {p.name for p in PACKAGE.iterdir() if p.is_dir() and (p / "__init__.py").exists()}
    out |= {p.stem for p in PACKAGE.glob("*.py") if p.stem != "__init__"}
    return out


def imports(path: Path) -> Iterator[tuple[str, int]]:
    """(imported meshctl top-level name, line) of every import in the file, at any depth."""
    parts = path.relative_to(ROOT).with_suffix("").parts
    package = parts[:-1]  # a module's package; an __init__'s own package
    names = top_level_names()
    for node in ast.walk(ast.parse(path.read_text(), str(path))):
        targets: list[str] = []
        if isinstance(node, ast.Import):
            targets = [a.name for a in node.names]
        elif isinstance(node, ast.ImportFrom):
            base = list(package[: len(package) - node.level + 1]) if node.level else []
            module = ".".join([*base, *([node.module] if node.module else [])])
            targets = [module] if module != "meshctl" else [f"meshctl.{a.name}" for a in node.names]
        for target in targets:
            bits = target.split(".")
            if bits[0] == "meshctl" and len(bits) > 1 and bits[1] in names:
                yield bits[1], node.lineno


def owner(path: Path) -> str:
    rel = path.relative_to(PACKAGE).parts
    return rel[0] if len(rel) > 1 else path.stem


def import_graph() -> dict[str, dict[str, str]]:
    """package -> {imported package: "file:line" of one such import}."""
    graph: dict[str, dict[str, str]] = {}
    for path in sorted(PACKAGE.rglob("*.py")):
        if path == PACKAGE / "__init__.py":
            continue
        src = owner(path)
        for dst, line in imports(path):
            if dst != src:
                graph.setdefault(src, {}).setdefault(dst, f"{path.relative_to(ROOT)}:{line}")
    return graph


def cycles(graph: dict[str, dict[str, str]]) -> list[list[str]]:
    """Strongly connected components of more than one package (Tarjan)."""
    index: dict[str, int] = {}
    low: dict[str, int] = {}
    stack: list[str] = []
    found: list[list[str]] = []

    def visit(v: str) -> None:
        index[v] = low[v] = len(index)
        stack.append(v)
        for w in graph.get(v, {}):
            if w not in index:
                visit(w)
                low[v] = min(low[v], low[w])
            elif w in stack:
                low[v] = min(low[v], index[w])
        if low[v] == index[v]:
            component = []
            while True:
                w = stack.pop()
                component.append(w)
                if w == v:
                    break
            if len(component) > 1:
                found.append(sorted(component))

    for v in sorted(graph):
        if v not in index:
            visit(v)
    return found


@pytest.fixture(scope="module")
def layers() -> dict[str, int]:
    rows = readme_layers((ROOT / "README.md").read_text())
    rank = {name: i for i, row in enumerate(rows) for name in row}
    assert len(rank) == sum(len(r) for r in rows), "a package is in two rows of the README's layer table"
    return rank


def test_every_package_has_a_layer(layers: dict[str, int]) -> None:
    names = top_level_names()
    assert names - layers.keys() == set(), "place these in the README's layer table"
    assert layers.keys() - names == set(), "the README's layer table names packages that do not exist"


def test_no_import_goes_up_a_layer(layers: dict[str, int]) -> None:
    upward = [f"{where}: {src} imports {dst}"
              for src, edges in import_graph().items() for dst, where in edges.items()
              if layers.get(dst, -1) > layers.get(src, -1)]
    assert upward == []


def test_no_cycle_between_packages() -> None:
    assert cycles(import_graph()) == []


def test_only_the_backend_reads_the_lab() -> None:
    readers = {src: edges["lab"] for src, edges in import_graph().items() if "lab" in edges}
    assert readers.keys() <= LAB_READERS, readers


def test_the_checks_catch_what_they_look_for() -> None:
    """The walker sees imports inside functions (the backend reads the lab only there); the
    cycle finder finds a cycle around three packages; the README parser skips continuations."""
    assert "lab" in import_graph()["backend"]
    assert any(dst == "errors" for dst, _ in imports(PACKAGE / "apply" / "engine.py"))
    assert cycles({"a": {"b": ""}, "b": {"c": ""}, "c": {"a": ""}, "d": {"a": ""}}) == [["a", "b", "c"]]
    table = "<!-- layers -->\n```\nerrors gcpause    blocks\n                  more words\nmodel  models\n```"
    assert readme_layers(table) == [["errors", "gcpause"], ["model"]]
