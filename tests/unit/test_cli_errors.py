"""Bad flags are bad input: one line on stderr, exit 1 (exit 2 means "changes present")."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

MESHCTL = Path(sys.executable).with_name("meshctl")


def run(*args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run([str(MESHCTL), *args], capture_output=True, text=True, timeout=60)


def test_unknown_option_is_one_line_and_exit_1() -> None:
    res = run("plan", "--bogus")
    assert res.returncode == 1
    lines = res.stderr.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("Error: No such option: --bogus")
    assert "Traceback" not in res.stderr and res.stdout == ""


def test_bad_value_names_the_parameter() -> None:
    res = run("identity", "get", "not-a-number")
    assert res.returncode == 1
    assert res.stderr.startswith("Error:") and "'ID'" in res.stderr


def test_missing_repo_is_a_clear_error() -> None:
    res = run("plan", "-C", "/nonexistent-meshctl-repo")
    assert res.returncode == 1
    assert res.stderr.strip() == "Error: /nonexistent-meshctl-repo: desired-state directory not found"


def test_group_without_command_shows_help() -> None:
    res = run("lab")
    assert res.returncode == 0 and "Usage: meshctl lab" in res.stdout


def test_a_kind_that_is_no_name_is_one_line_with_file_and_line(tmp_path: Path) -> None:
    """`kind: []` and `kind: {}` raised TypeError (unhashable type) before."""
    for odd in ("[]", "{}"):
        policy = f"apiVersion: cilium.io/v2\nkind: {odd}\nmetadata: {{name: x}}\n"
        (tmp_path / "policy.yaml").write_text(policy)
        res = run("policy", "trace", "--dir", str(tmp_path), "--from", "a/b", "--to", "c/d", "--port", "80")
        assert res.returncode == 1 and res.stdout == ""
        assert res.stderr.strip() == (
            f"Error: policy.yaml:2: kind: expected a kind name such as NetworkPolicy (got {odd})")


def test_trace_dir_errors(tmp_path: Path) -> None:
    res = run("policy", "trace", "--dir", "/nonexistent-meshctl-dir", "--from", "a/b", "--to", "c/d",
              "--port", "1")
    assert res.returncode == 1
    assert res.stderr.strip() == "Error: /nonexistent-meshctl-dir: directory not found"
    res = run("policy", "trace", "-C", str(tmp_path), "--dir", str(tmp_path), "--from", "a/b", "--to", "c/d",
              "--port", "1")
    assert res.returncode == 1 and res.stderr.strip() == "Error: give either -C REPO or --dir DIR, not both"
    (tmp_path / "ns.yaml").write_text("apiVersion: v1\nkind: Namespace\nmetadata: {name: a}\n")
    res = run("policy", "trace", "--dir", str(tmp_path), "--from", "a/b", "--to", "a/c", "--port", "1")
    assert res.returncode == 1 and res.stderr.splitlines()[-1] == "Error: unknown pod 'a/b' (or it has no IP)"
