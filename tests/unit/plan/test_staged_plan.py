"""Staged policies in plans, the state record, the audit report and the requireCleanAudit gate."""

from __future__ import annotations

import json
import socket
import sys
from datetime import UTC, datetime, timedelta
from ipaddress import IPv4Address
from pathlib import Path

import pytest

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "compile"))
from test_staged import _compile, _db_policy  # the staged war-story cluster of the compiler test

from meshctl.audit import AuditGateError, audit_report, check_clean, gate, plan_inputs
from meshctl.catalog import Catalog, RuleOrigin
from meshctl.flows.enrich import EVENT, EnrichContext, Enricher
from meshctl.flows.store import FlowStore, store_path
from meshctl.model.staging import policy_digest
from meshctl.nodestate import Direction
from meshctl.plan import PodTarget, build_plan, read_plan, write_plan
from meshctl.plan.staged import (
    WOULD_DROP,
    AuditGroup,
    Enforcement,
    StagedPolicy,
    age_text,
    enforced_now,
    record_staged,
    staged_rows,
)
from meshctl.report.audit import render_markdown as audit_markdown
from meshctl.report.audit import render_text as audit_text
from meshctl.report.plan_markdown import render_markdown
from meshctl.report.plan_text import render_text

POLICY = "CiliumNetworkPolicy prod/database-security"
CACHE, BACKEND, DB = "10.0.0.1", "10.0.0.2", "10.0.0.3"
NOW = datetime(2026, 12, 1, 17, 0, 0, tzinfo=UTC)
PODS = [PodTarget("prod/cache", IPv4Address(CACHE)), PodTarget("prod/backend", IPv4Address(BACKEND)),
        PodTarget("prod/postgres", IPv4Address(DB), (("TCP", 5432),))]


def test_digest_ignores_the_mode_but_not_the_content() -> None:
    staged, enforced = _db_policy("audit"), _db_policy()
    assert policy_digest(staged) == policy_digest(enforced)
    wider = _db_policy("audit")
    wider["spec"]["ingress"][0]["fromEndpoints"].append({"matchLabels": {"app": "cache"}})
    assert policy_digest(wider) != policy_digest(staged)


def test_since_survives_only_the_same_version() -> None:
    recorded = {POLICY: {"digest": "sha256:a", "since": "2026-12-01T14:02:00+00:00"}}
    since = recorded[POLICY]["since"]
    assert staged_rows({POLICY: "sha256:a"}, recorded) == (StagedPolicy(POLICY, "sha256:a", since),)
    assert staged_rows({POLICY: "sha256:b"}, recorded) == (StagedPolicy(POLICY, "sha256:b", None),)
    stamp = "2026-12-01T16:00:00+00:00"
    assert record_staged(recorded, [StagedPolicy(POLICY, "sha256:a")], stamp)[POLICY]["since"] == since
    changed = record_staged(recorded, [StagedPolicy(POLICY, "sha256:b")], stamp)
    assert changed[POLICY] == {"digest": "sha256:b", "since": stamp}
    assert record_staged(recorded, [], stamp) == {}  # enforced or removed: forgotten
    # enforced: still in the repo, no longer staged; removed policies are not "enforced"
    assert enforced_now(recorded, [], [POLICY]) == {POLICY: recorded[POLICY]["since"]}
    assert enforced_now(recorded, [POLICY], [POLICY]) == {}
    assert enforced_now(recorded, [], []) == {}


def test_age_text() -> None:
    assert [age_text(s) for s in (0, 1, 59, 60, 7200, 86400 * 3)] == [
        "0 seconds", "1 second", "59 seconds", "1 minute", "2 hours", "3 days"]


def _store(state_dir: Path, compiled: object, rows: list[tuple[str, str, int, int, int, datetime]]) -> None:
    """AUDIT/other flows into node-2's store, enriched with the compiled catalog as the agent does
    (in time order: the store keeps times increasing)."""
    rows = sorted(rows, key=lambda r: r[-1])
    catalog: Catalog = compiled.catalog  # type: ignore[attr-defined]
    pod_by_ip = {CACHE: "prod/cache", BACKEND: "prod/backend", DB: "prod/postgres"}
    store_path(state_dir, "n2").parent.mkdir(parents=True, exist_ok=True)
    with FlowStore(store_path(state_dir, "n2"), "n2") as store:
        e = Enricher(EnrichContext("n2", catalog, pod_by_ip), store.dims, offset_ns=0)
        ep = next(iter(catalog.endpoints["n2"]))
        raw = b"".join(
            EVENT.pack(int(t.timestamp() * 1e9), socket.inet_aton(src), socket.inet_aton(DB),
                       socket.htons(40000 + i), socket.htons(5432), 6, 0, verdict, reason, 1, 2, ep, cookie,
                       2, 60)
            for i, (src, _, verdict, reason, cookie, t) in enumerate(rows))
        store.insert(e.rows(raw))


def _enforce_plan(tmp_path: Path, flows: list | None) -> tuple[object, object]:
    staged, enforced = _compile(_db_policy("audit")), _compile(_db_policy())
    since = (NOW - timedelta(hours=3)).isoformat(timespec="seconds")
    recorded = {POLICY: {"digest": staged.staged_digests[POLICY], "since": since}}
    if flows is not None:
        _store(tmp_path, staged, flows)
    rows, enforcing = plan_inputs(tmp_path, recorded, enforced.staged_digests,
                                  [d.title for d in enforced.spec.policies])
    assert rows == ()
    plan = build_plan(staged.nodes, enforced.nodes, enforced.catalog, pods=PODS, enforcing=enforcing,
                      created_at=NOW)
    return plan, staged


def test_the_plan_that_enforces_lists_the_audit_flows_since_staging(tmp_path: Path) -> None:
    t1, t2 = NOW - timedelta(hours=1), NOW - timedelta(minutes=3)
    plan, _ = _enforce_plan(tmp_path, [
        (CACHE, "", 4, 2, 0, t1), (CACHE, "", 4, 2, 0, t2),  # would drop (default deny of the staged view)
        (BACKEND, "", 1, 1, 0, t2),  # a forwarded flow: not evidence
        (CACHE, "", 4, 2, 0, NOW - timedelta(hours=5)),  # before it was staged: not evidence
    ])
    [row] = plan.enforcing
    assert row.policy == POLICY and row.evidence is not None
    [group] = row.evidence
    assert (group.src, group.dst, group.port, group.protocol, group.effect, group.count) == (
        "prod/cache", "prod/postgres", 5432, "tcp", WOULD_DROP, 2)
    assert group.last_ns == int(t2.timestamp() * 1e9)
    text = render_text(plan).plain
    assert "Enforcing staged policies" in text
    assert f"{POLICY}: audit -> enforce, staged since {row.since} (3 hours)" in text
    assert ("2 flows prod/cache -> prod/postgres:5432/tcp would have been dropped, last 3 minutes ago"
            in text)
    assert "prod/cache -> prod/postgres tcp/5432: FORWARDED -> DROPPED" in text  # the inventory prediction
    md = render_markdown(plan)
    assert "#### Enforcing staged policies" in md and "⛔ 2 flows prod/cache -> prod/postgres:5432/tcp" in md
    back = read_plan(write_plan(plan, tmp_path / "plan.json"))
    assert back.enforcing == plan.enforcing and back.plan_id == plan.plan_id


def test_a_clean_window_and_a_missing_store_say_so(tmp_path: Path) -> None:
    plan, _ = _enforce_plan(tmp_path / "clean", [(BACKEND, "", 1, 1, 0, NOW)])
    assert plan.enforcing[0].evidence == ()
    assert "no AUDIT flows since it was staged" in render_text(plan).plain
    unknown, _ = _enforce_plan(tmp_path / "none", None)
    assert unknown.enforcing[0].evidence is None
    assert "no flow store could be read" in render_text(unknown).plain


def test_a_staged_plan_shows_what_enforcing_would_change(tmp_path: Path) -> None:
    staged = _compile(_db_policy("audit"))
    rows = staged_rows(staged.staged_digests, {})
    plan = build_plan({}, staged.nodes, staged.catalog, pods=PODS, staged=rows, created_at=NOW)
    assert plan.impact == ()  # staging changes no verdict
    assert [(r.src, r.dst, r.before, r.after) for r in plan.staged_impact] == [
        ("prod/cache", "prod/postgres", "FORWARDED", "DROPPED"),
        ("world", "prod/postgres", "FORWARDED", "DROPPED")]
    assert plan.staged_impact[0].rules == (
        f"default deny: prod/postgres ingress isolated by {POLICY}",)
    text = render_text(plan).plain
    assert f"{POLICY}: staged by this apply (audit mode: loaded, not enforced)" in text
    assert "prod/cache -> prod/postgres tcp/5432: FORWARDED -> DROPPED once enforced" in text
    assert "audit_ingress: false -> true" not in text  # a new endpoint: created whole
    assert "policymap prod/postgres (staged)" in text
    assert json.loads(json.dumps(plan.to_json()))["staged"][0]["since"] is None


def test_gate_refuses_young_or_dirty_and_force_overrides(tmp_path: Path) -> None:
    staged = _compile(_db_policy("audit"))
    _store(tmp_path, staged, [(CACHE, "", 4, 2, 0, NOW - timedelta(minutes=3))])
    old = Enforcement(POLICY, (NOW - timedelta(hours=30)).isoformat())
    young = Enforcement(POLICY, (NOW - timedelta(minutes=10)).isoformat())
    [dirty] = check_clean(tmp_path, [old], "24h", NOW)
    assert dirty.reasons == (
        "1 flow prod/cache -> prod/postgres:5432/tcp would have been dropped, last 3 minutes ago",)
    assert check_clean(tmp_path, [old], "1m", NOW)[0].reasons == ()  # the drop is older than the window
    [new] = check_clean(tmp_path, [young], "1m", NOW)
    assert new.reasons == ()
    [too_young] = check_clean(tmp_path, [young], "1h", NOW)
    assert too_young.reasons[0].startswith("staged for 10 minutes") and len(too_young.reasons) == 2
    with pytest.raises(AuditGateError, match=r"(?s)refusing to enforce 1 staged.*would have been dropped"):
        gate(tmp_path, [old], "24h", force=False, now=NOW)
    gate(tmp_path, [old], "24h", force=True, now=NOW)
    gate(tmp_path, [old], None, force=False, now=NOW)  # no requireCleanAudit: no gate
    [unknown] = check_clean(tmp_path / "nowhere", [old], "1m", NOW)
    assert unknown.reasons == ("no flow store could be read: the audit window cannot be checked",)


def test_audit_report_groups_would_drop_and_would_allow(tmp_path: Path) -> None:
    staged = _compile(_db_policy("audit"))
    cookie = next(c for c, o in staged.origins.items() if o.name == "database-security")
    _store(tmp_path, staged, [
        (CACHE, "", 4, 2, 0, NOW - timedelta(minutes=5)),
        (CACHE, "", 4, 2, 0, NOW - timedelta(minutes=50)),
        (BACKEND, "", 4, 0, cookie, NOW - timedelta(minutes=1)),  # a staged allow of a drop
    ])
    since = (NOW - timedelta(hours=2)).isoformat(timespec="seconds")
    [row] = audit_report(tmp_path, {POLICY: since}, None, NOW)
    assert [(g.src, g.effect, g.count) for g in row.evidence or ()] == [
        ("prod/cache", "would drop", 2), ("prod/backend", "would allow", 1)]
    [recent] = audit_report(tmp_path, {POLICY: since}, 600, NOW)
    assert [(g.src, g.count) for g in recent.evidence or ()] == [("prod/cache", 1), ("prod/backend", 1)]
    text = audit_text("prod", [row], NOW)
    assert "would drop: 2 flows (1 connection)" in text and "would allow: 1 flow (1 connection)" in text
    md = audit_markdown("prod", [row], NOW)
    assert f"| `{POLICY}` | 2 hours | ⛔ 2 flows (1 connection) | 1 flow (1 connection) |" in md
    assert audit_text("prod", [], NOW).startswith("No staged policies")


def test_audit_group_line() -> None:
    g = AuditGroup("production/cache", "production/postgres", "tcp", 5432, WOULD_DROP, 1284, 0,
                   int((NOW - timedelta(minutes=3)).timestamp() * 1e9))
    assert g.line(NOW) == ("1,284 flows production/cache -> production/postgres:5432/tcp would have been "
                           "dropped, last 3 minutes ago")


def test_catalog_names_are_what_flows_carry() -> None:
    """AUDIT flows are matched to a policy by the names the catalog gives (rule or isolation)."""
    staged = _compile(_db_policy("audit"))
    origin: RuleOrigin = next(o for o in staged.origins.values() if o.name == "database-security")
    assert str(origin).startswith(POLICY + " ")
    assert POLICY in staged.catalog.staged_isolation["prod/postgres"][Direction.INGRESS]
