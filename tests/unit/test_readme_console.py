"""Every ```console block of the READMEs whose commands need no lab is run and compared.

A block is `$ meshctl ...` lines, each followed by what it prints (stdout and stderr together, as
a terminal shows them) and optionally `$ echo $?` with its exit code. Commands that need a lab,
root, a saved plan, git revisions or a repo made by hand (paths under /tmp) are not run: their
output holds times, pids and addresses. The others (validate, policy trace, identity, state
unlock, --version) are deterministic, so the whole output is compared line by line. They run in
a copy of `examples/` without `state/` or `plans/`, so identities are those a fresh repo gets,
and the copy's path is written back as the checkout's path the README was made in.
Every other `meshctl ...` line of the READMEs' code blocks is parsed (not run): its command and
flags must exist, so `meshctl plan examples/x` or `state show --json` cannot come back.
"""

from __future__ import annotations

import re
import shlex
import shutil
import subprocess
import sys
from dataclasses import dataclass, field
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[2]
MESHCTL = Path(sys.executable).with_name("meshctl")
READMES = [REPO / "README.md", *sorted((REPO / "examples").glob("*/README.md"))]
README_ROOT = "/work/main"  # where the README's output was made (paths in error messages)

# Commands that run without a lab: (words after `meshctl`, skipping options) prefixes.
LAB_FREE = (("validate",), ("policy", "trace"), ("identity", "list"), ("identity", "get"),
            ("state", "unlock"), ("--version",))

# README.md blocks (file name, first command) that are out of date: the lead updates README.md
# and then empties this list. Each entry says what the block must show instead.
STALE_README_BLOCKS: dict[tuple[str, str], str] = {}


@dataclass
class Step:
    command: str
    output: list[str] = field(default_factory=list)
    exit_code: int | None = None


@dataclass
class Block:
    readme: Path
    line: int
    steps: list[Step]

    @property
    def key(self) -> tuple[str, str]:
        return (str(self.readme.relative_to(REPO)), self.steps[0].command)


def parse_blocks(path: Path) -> list[Block]:
    blocks: list[Block] = []
    lines = path.read_text().splitlines()
    i = 0
    while i < len(lines):
        if lines[i].strip() != "```console":
            i += 1
            continue
        start, steps = i + 1, []
        i += 1
        while i < len(lines) and lines[i].strip() != "```":
            text = lines[i]
            if text.startswith("$ echo $?"):
                steps[-1].exit_code = int(lines[i + 1].strip())
                i += 2
                continue
            if text.startswith("$ "):
                steps.append(Step(text[2:]))
            elif steps:
                steps[-1].output.append(text)
            i += 1
        blocks.append(Block(path, start, steps))
        i += 1
    return blocks


def words(command: str) -> list[str]:
    """The subcommand words: `meshctl -C X plan --out Y` -> ['plan']."""
    args = shlex.split(command)[1:]
    out, skip = [], False
    for a in args:
        if skip:
            skip = False
        elif a in ("-C", "--repo"):
            skip = True
        elif a.startswith("-") and a != "--version":
            break
        else:
            out.append(a)
    return out


def runnable(step: Step) -> bool:
    if not step.command.startswith("meshctl ") or "/tmp/" in step.command or "|" in step.command:
        return False
    w = words(step.command)
    return any(tuple(w[: len(p)]) == p for p in LAB_FREE)


ALL = [b for r in READMES for b in parse_blocks(r)]
RUNNABLE = [b for b in ALL if b.steps and all(runnable(s) for s in b.steps)]


@pytest.fixture(scope="module")
def workdir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    root = tmp_path_factory.mktemp("readme")
    shutil.copytree(REPO / "examples", root / "examples", ignore=shutil.ignore_patterns("state", "plans"))
    return root


def test_the_readmes_have_console_blocks_that_run() -> None:
    assert len(ALL) >= 15 and len(RUNNABLE) >= 5
    places = {str(b.readme.relative_to(REPO)) for b in RUNNABLE}
    assert places >= {"README.md", "examples/three-tier/README.md", "examples/production/README.md"}


@pytest.mark.parametrize("block", RUNNABLE, ids=lambda b: f"{b.readme.relative_to(REPO)}:{b.line}")
def test_console_block(block: Block, workdir: Path) -> None:
    if block.key in STALE_README_BLOCKS:
        pytest.skip(f"README.md block out of date: {STALE_README_BLOCKS[block.key]}")
    for step in block.steps:
        args = shlex.split(step.command)[1:]
        res = subprocess.run([str(MESHCTL), *args], cwd=workdir, stdout=subprocess.PIPE,
                             stderr=subprocess.STDOUT, text=True, timeout=120)
        got = [re.sub(re.escape(str(workdir)), README_ROOT, line).rstrip()
               for line in res.stdout.splitlines()]
        want = [line.rstrip() for line in step.output]
        where = f"{block.readme.relative_to(REPO)}:{block.line}: `{step.command}`"
        assert got == want, f"{where} prints:\n" + "\n".join(got)
        assert res.returncode == (step.exit_code or 0), f"{where} exits {res.returncode}"


def test_example_readmes_name_the_repo_with_C() -> None:
    """`meshctl plan examples/...` fails: every meshctl command in the example READMEs uses -C."""
    for readme in READMES[1:]:
        for line in readme.read_text().splitlines():
            text = line.removeprefix("$ ").strip()
            if not text.startswith("meshctl "):
                continue
            args = shlex.split(text.partition("#")[0])[1:]
            w = words("meshctl " + " ".join(args))
            positional = [a for a in w if "/" in a and not a.startswith("demo/")]
            assert not positional, f"{readme.relative_to(REPO)}: `{text}` passes a repo without -C"


def readme_commands() -> list[tuple[str, str]]:
    """(where, command) of every `meshctl ...` line in the READMEs' code blocks."""
    found = []
    for readme in READMES:
        inside, console = False, False  # as CommonMark: a block ends at a bare ``` only
        for n, line in enumerate(readme.read_text().splitlines(), 1):
            fence = line.strip()
            if fence.startswith("```") and (not inside or fence == "```"):
                inside, console = not inside, fence == "```console"
                continue
            if console and not line.startswith("$ "):
                continue  # a command's output
            text = line.removeprefix("$ ").split(" #")[0].split("|")[0].split("&&")[-1].strip()
            if inside and "meshctl " in text and not text.startswith("#"):
                text = text[text.index("meshctl "):]
                if text.split()[0] == "meshctl":
                    found.append((f"{readme.relative_to(REPO)}:{n}", text))
    return found


@pytest.mark.parametrize(("where", "command"), readme_commands(), ids=lambda x: x)
def test_every_readme_command_parses(where: str, command: str) -> None:
    """The commands that need a lab are not run, but their command and flags must exist."""
    from meshctl.cli.main import build_command

    cmd = build_command()
    args = shlex.split(command)[1:]
    if args == ["--version"]:
        return
    ctx = cmd.make_context("meshctl", list(args))
    while hasattr(cmd, "commands"):
        name, cmd, rest = cmd.resolve_command(ctx, [*getattr(ctx, "_protected_args", []), *ctx.args])
        assert cmd is not None, f"{where}: no command {name!r}"
        ctx = cmd.make_context(name, rest, parent=ctx)
