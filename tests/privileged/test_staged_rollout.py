"""The war story, staged: database-security in audit mode first, its evidence, then enforced.

A copy of examples/production in a real lab with its flow agents. database-security is applied
with `policy.meshctl.io/mode: audit`: cache -> postgres keeps working and the datapath reports
AUDIT flows naming the policy. The plan that enforces it lists those flows, and apply refuses under
`requireCleanAudit`; after the fix (cache added, still staged) the window starts again: enforcing at
once is refused as too young, and once the window has passed clean it is applied and verified.
"""

from __future__ import annotations

import json
import re
import time
from collections.abc import Iterator
from pathlib import Path

import git
import pytest
from apply_helpers import EXAMPLE, connect, example_copy, git_init, meshctl, unique_cluster

pytestmark = [pytest.mark.privileged, pytest.mark.lab]

EXAMPLES = EXAMPLE.parent
CLUSTER = unique_cluster("t-stg")
POLICY = "CiliumNetworkPolicy production/database-security"
WINDOW_S = 8.0  # requireCleanAudit
STAGED = "  annotations:\n    policy.meshctl.io/mode: audit\n"
CACHE_PEER = "        - matchLabels:\n            app: cache\n"
Story = tuple[Path, git.Repo]


def _policy(staged: bool, with_cache: bool) -> str:
    text = (EXAMPLES / "production-changes" / "database-security.yaml").read_text()
    if staged:
        text = text.replace("  namespace: production\n", "  namespace: production\n" + STAGED, 1)
    if with_cache:
        text = text.replace("      toPorts:\n", CACHE_PEER + "      toPorts:\n", 1)
    return text


def _commit(repo: git.Repo, root: Path, staged: bool, with_cache: bool, message: str) -> None:
    (root / "policies" / "database-security.yaml").write_text(_policy(staged, with_cache))
    repo.git.add(A=True)
    repo.index.commit(message)


@pytest.fixture(scope="module")
def story(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Story]:
    root = example_copy("production", tmp_path_factory.mktemp("staged") / "desired", CLUSTER)
    with (root / "meshctl.toml").open("a") as toml:  # [rollout] is the file's last table
        toml.write(f'requireCleanAudit = "{WINDOW_S:g}s"\n')
    repo = git_init(root, "production")
    try:
        res = meshctl(root, "lab", "up", timeout=120)
        assert res.returncode == 0, res.stderr
        yield root, repo
    finally:
        meshctl(root, "lab", "down", timeout=120)


def _audit_flows(root: Path, since: float) -> list[dict[str, object]]:
    window = f"{time.time() - since + 1:.0f}s"
    res = meshctl(root, "observe", "--verdict", "AUDIT", "-o", "json", "--since", window)
    assert res.returncode == 0, res.stderr
    return [json.loads(line) for line in res.stdout.splitlines() if line.strip()]


def _wait_audit(root: Path, started: float, src: str) -> dict[str, object]:
    deadline = time.monotonic() + 15
    while True:
        flows = [f for f in _audit_flows(root, started) if f["src_pod"] == src]
        if flows:
            return flows[-1]
        assert time.monotonic() < deadline, f"no AUDIT flow from {src} was recorded"
        time.sleep(0.2)


def _endpoint_flags(root: Path) -> tuple[bool, bool]:
    """(enforce_ingress, audit_ingress) of postgres as the kernel holds them."""
    from apply_helpers import observe_all

    state = observe_all(root)["node-1"]
    [ep] = state.endpoints.values()
    return ep.enforce_ingress, ep.audit_ingress


def test_staged_policy_changes_nothing_and_reports_what_it_would_drop(story: Story) -> None:
    root, repo = story
    _commit(repo, root, staged=True, with_cache=False, message="stage database-security")
    res = meshctl(root, "apply", "--auto-approve", timeout=120)
    assert res.returncode == 0, res.stdout + res.stderr
    assert f"{POLICY}: staged by this apply (audit mode: loaded, not enforced)" in res.stdout
    would = "production/cache -> production/postgres tcp/5432: FORWARDED -> DROPPED once enforced"
    assert would in res.stdout
    assert _endpoint_flags(root) == (False, True)

    started = time.time()
    for _ in range(3):
        assert connect(CLUSTER, "production/cache", "production/postgres", 5432)  # keeps working
        assert connect(CLUSTER, "production/backend", "production/postgres", 5432)
    audit = _wait_audit(root, started, "production/cache")
    assert (audit["dst_pod"], audit["dst_port"]) == ("production/postgres", 5432)
    assert audit["audit"] == "would drop"
    assert audit["drop_reason"] == f"default deny: production/postgres ingress isolated by {POLICY}"
    time.sleep(0.5)  # the backend's connections were judged alike by both views: no AUDIT for them
    assert not [f for f in _audit_flows(root, started) if f["src_pod"] == "production/backend"]

    status = meshctl(root, "status")
    assert "Staged:         1 policy in audit mode" in status.stdout, status.stdout
    assert f"  {POLICY}: audit mode for" in status.stdout


def test_enforcing_lists_the_evidence_and_require_clean_audit_refuses(story: Story) -> None:
    root, repo = story
    _commit(repo, root, staged=False, with_cache=False, message="enforce database-security")
    plan = meshctl(root, "plan", timeout=120)
    assert plan.returncode == 0, plan.stderr
    assert f"{POLICY}: audit -> enforce, staged since" in plan.stdout
    assert re.search(r"\d+ flows? production/cache -> production/postgres:5432/tcp would have been dropped, "
                     r"last \d+ seconds? ago", plan.stdout), plan.stdout

    res = meshctl(root, "apply", "--auto-approve", timeout=120)
    assert res.returncode == 1
    refusal = "requireCleanAudit = '8s': refusing to enforce 1 staged policy(ies); nothing was applied."
    assert refusal in res.stderr
    assert "production/cache -> production/postgres:5432/tcp would have been dropped" in res.stderr
    assert "Traceback" not in res.stderr
    assert _endpoint_flags(root) == (False, True)  # nothing applied: still staged
    assert connect(CLUSTER, "production/cache", "production/postgres", 5432)

    report = meshctl(root, "audit", "report", "-o", "markdown")
    assert report.returncode == 0, report.stderr
    assert f"| `{POLICY}` |" in report.stdout and "⛔" in report.stdout
    assert "production/cache -> production/postgres:5432/tcp would have been dropped" in report.stdout


def test_after_the_fix_the_window_is_clean_and_enforcement_is_verified(story: Story) -> None:
    root, repo = story
    _commit(repo, root, staged=True, with_cache=True, message="database-security: the cache too (staged)")
    res = meshctl(root, "apply", "--auto-approve", timeout=120)
    assert res.returncode == 0, res.stdout + res.stderr
    fixed_at = time.time()
    assert f"{POLICY}: staged by this apply" in res.stdout  # a new version: the window starts again
    for _ in range(3):
        assert connect(CLUSTER, "production/cache", "production/postgres", 5432)
        assert connect(CLUSTER, "production/backend", "production/postgres", 5432)

    _commit(repo, root, staged=False, with_cache=True, message="enforce database-security")
    young = meshctl(root, "apply", "--auto-approve", timeout=120)
    assert time.time() - fixed_at < WINDOW_S, "the machine was too slow to see the young-policy refusal"
    assert young.returncode == 1
    assert re.search(r"staged for \d+ seconds? \(since .*\), less than requireCleanAudit = '8s'",
                     young.stderr), young.stderr
    assert "would have been dropped" not in young.stderr  # the fixed version would drop nothing seen

    time.sleep(max(0.0, fixed_at + WINDOW_S + 1 - time.time()))
    plan = meshctl(root, "plan", timeout=120)
    assert "no AUDIT flows since it was staged: enforcing it changes no traffic seen" in plan.stdout
    res = meshctl(root, "apply", "--auto-approve", timeout=120)
    assert res.returncode == 0, res.stdout + res.stderr
    assert "check cache-to-postgres: production/cache -> production/postgres:5432/TCP expected allowed, " \
           "observed allowed: ok" in res.stderr
    assert _endpoint_flags(root) == (True, False)
    assert connect(CLUSTER, "production/cache", "production/postgres", 5432)
    status = meshctl(root, "status")
    assert "Staged:         none" in status.stdout
