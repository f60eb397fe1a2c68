"""The root command: --version, -C before the command, completion, validate, and help texts
that show every word they were given (no markup eats `[state]`, no `<bool>` on flags)."""

from __future__ import annotations

import json
import os
import re
import shutil
import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest

from meshctl.cli.main import build_command, version
from tests.climain import call

REPO = Path(__file__).resolve().parents[2]
MESHCTL = Path(sys.executable).with_name("meshctl")
THREE_TIER = REPO / "examples" / "three-tier"


def commands(cmd: Any = None, path: tuple[str, ...] = ()) -> list[tuple[tuple[str, ...], Any]]:
    """(path, click command) of every command and group, the root included."""
    cmd = cmd or build_command()
    found = [(path, cmd)]
    for name, sub in getattr(cmd, "commands", {}).items():
        found += commands(sub, (*path, name))
    return found


def squash(text: str) -> str:
    """Whitespace as one space; a line wrapped after a hyphen joined again."""
    return re.sub(r"-\s+", "-", re.sub(r"\s+", " ", text)).strip()


def test_version(capsys: pytest.CaptureFixture[str]) -> None:
    code, out, _ = call(capsys, "--version")
    assert code == 0 and out == f"meshctl {version()}\n"
    assert re.fullmatch(r"\d+\.\d+\.\d+.*", version())


@pytest.mark.parametrize("path", [p for p, _ in commands()], ids=lambda p: " ".join(p) or "meshctl")
def test_help_shows_every_word_it_was_given(capsys: pytest.CaptureFixture[str],
                                            path: tuple[str, ...]) -> None:
    """Each help string appears whole in --help (wrapping aside): nothing eaten, no `  ` holes."""
    code, out, err = call(capsys, *path, "--help")
    assert code == 0, err
    assert "<bool>" not in out and "<list[" not in out
    cmd = dict(commands())[path]
    shown = squash(out)
    texts = [cmd.help or ""] + [p.help for p in cmd.params if getattr(p, "help", None) and not p.hidden]
    for text in texts:
        first_para = squash(text.split("\n\n")[0])
        assert first_para in shown, f"{first_para!r} is not whole in `meshctl {' '.join(path)} --help`"
    for bracketed in re.findall(r"\[[a-zA-Z]+\]", " ".join(texts)):
        assert bracketed in out


def test_bracketed_config_sections_survive_in_help(capsys: pytest.CaptureFixture[str]) -> None:
    _, out, _ = call(capsys, "impact", "--help")
    assert '[inventory] source = "kubernetes"' in squash(out)
    _, out, _ = call(capsys, "state", "show", "--help")
    assert "(default: the repo's [state] dir)" in squash(out)


def test_repo_before_the_command(capsys: pytest.CaptureFixture[str]) -> None:
    code, before, err = call(capsys, "-C", str(THREE_TIER), "identity", "list", "-o", "json")
    assert code == 0, err
    code, after, _ = call(capsys, "identity", "list", "-C", str(THREE_TIER), "-o", "json")
    assert before == after and "demo/api" in before
    code, out, err = call(capsys, "-C", str(THREE_TIER), "validate")
    assert code == 0 and "valid" in out, err
    # the command's own -C still wins over the root's
    code, out, err = call(capsys, "-C", "/nonexistent-meshctl-repo", "validate", "-C", str(THREE_TIER))
    assert code == 0, err


def test_repo_before_a_missing_repo_is_one_error_line(capsys: pytest.CaptureFixture[str]) -> None:
    code, out, err = call(capsys, "-C", "/nonexistent-meshctl-repo", "plan")
    assert code == 1 and out == ""
    assert err.strip() == "Error: /nonexistent-meshctl-repo: desired-state directory not found"


def test_shell_completion_is_on() -> None:
    env = {**os.environ, "_MESHCTL_COMPLETE": "complete_bash", "COMP_WORDS": "meshctl obs", "COMP_CWORD": "1"}
    res = subprocess.run([str(MESHCTL)], env=env, capture_output=True, text=True, timeout=60)
    assert res.returncode == 0 and res.stdout.split() == ["observe"]
    env.update(COMP_WORDS="meshctl observe --from-na", COMP_CWORD="2")
    res = subprocess.run([str(MESHCTL)], env=env, capture_output=True, text=True, timeout=60)
    assert res.stdout.split() == ["--from-namespace"]
    res = subprocess.run([str(MESHCTL), "--show-completion", "bash"], capture_output=True, text=True,
                         timeout=60)
    assert res.returncode == 0 and "_MESHCTL_COMPLETE" in res.stdout


@pytest.mark.parametrize("name", ["three-tier", "production", "services"])
def test_validate_examples(capsys: pytest.CaptureFixture[str], name: str) -> None:
    code, out, err = call(capsys, "validate", "-C", str(REPO / "examples" / name))
    assert code == 0, out + err
    assert out.splitlines()[-1].startswith(f"{REPO / 'examples' / name}: valid (3 node(s), ")


def test_validate_names_every_problem_with_file_and_line(capsys: pytest.CaptureFixture[str],
                                                         tmp_path: Path) -> None:
    repo = tmp_path / "repo"
    shutil.copytree(THREE_TIER, repo, ignore=shutil.ignore_patterns("state", "plans"))
    api = repo / "policies" / "frontend-to-api.yaml"
    api.write_text(api.read_text().replace("port: \"3000\"", "port: \"70000\"", 1))
    (repo / "policies" / "broken.yaml").write_text("kind: [\n")
    (repo / "policies" / "odd.yaml").write_text("apiVersion: v1\nkind: Secret\nmetadata: {name: x}\n")
    code, out, err = call(capsys, "validate", "-C", str(repo))
    assert code == 1, err
    errors = [line for line in out.splitlines() if line.startswith("Error: ")]
    assert len(errors) == 3, out
    assert any(re.match(r"Error: policies/frontend-to-api\.yaml:\d+: spec\..*70000", e) for e in errors), out
    assert any(re.match(r"Error: policies/broken\.yaml:\d+: ", e) for e in errors), out
    assert any(e.startswith("Error: policies/odd.yaml:2: kind: unknown kind 'Secret'") for e in errors), out
    assert out.splitlines()[-1] == f"{repo}: 3 problem(s)"
    code, out, _ = call(capsys, "validate", "-C", str(repo), "-o", "json")
    doc = json.loads(out)
    assert code == 1 and doc["valid"] is False and len(doc["errors"]) == 3


def test_validate_cross_checks_and_warnings(capsys: pytest.CaptureFixture[str], tmp_path: Path) -> None:
    repo = tmp_path / "repo"
    shutil.copytree(THREE_TIER, repo, ignore=shutil.ignore_patterns("state", "plans"))
    (repo / "policies" / "empty.yaml").write_text(
        "apiVersion: cilium.io/v2\nkind: CiliumNetworkPolicy\nmetadata: {name: empty, namespace: demo}\n"
        "spec:\n  endpointSelector: {matchLabels: {app: api}}\n  ingress: []\n")
    code, out, err = call(capsys, "validate", "-C", str(repo))
    assert code == 0, out + err
    assert any(line.startswith("Warning: policies/empty.yaml:") for line in out.splitlines()), out
    (repo / "policies" / "dup.yaml").write_text((repo / "policies" / "empty.yaml").read_text())
    code, out, _ = call(capsys, "validate", "-C", str(repo))
    assert code == 1 and "duplicate CiliumNetworkPolicy demo/empty" in out
    (repo / "meshctl.toml").unlink()
    code, out, _ = call(capsys, "validate", "-C", str(repo))
    assert code == 1 and "Error: meshctl.toml: missing" in out
