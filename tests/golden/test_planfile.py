"""Plan file: round trip, tamper detection, version check, unreadable files, stale plans."""

from __future__ import annotations

import json
from dataclasses import replace
from pathlib import Path

import pytest
from golden_scenario import STATE, intended, make_plan, observed

from meshctl.errors import PlanError, PlanStaleError
from meshctl.nodestate import DatapathConfig
from meshctl.plan import Plan, apply_changes, check_fresh, default_plan_path, read_plan, write_plan
from meshctl.plan.model import PlanWarning, compute_plan_id
from meshctl.plan.stale import explain_stale


@pytest.fixture(scope="module")
def plan() -> Plan:
    return make_plan()


@pytest.fixture
def saved(plan: Plan, tmp_path: Path) -> Path:
    return write_plan(plan, default_plan_path(tmp_path, plan))


def test_round_trip(plan: Plan, saved: Path) -> None:
    back = read_plan(saved)
    assert back == plan
    assert back.plan_id == plan.plan_id
    assert saved.name.startswith("plan-20250102T030405-")
    doc = json.loads(saved.read_text())
    assert doc["format_version"] == "2.5" and doc["source"]["commit"].startswith("4f2a9c1d")
    assert doc["state"] == {"lineage": STATE.lineage, "serial": 3}
    node = doc["nodes"][1]
    assert node["node"] == "node-2" and node["observed_fingerprint"] == observed()["node-2"].fingerprint()
    first = node["resource_changes"][0]
    assert first["address"] == "node-2 config"
    assert first["change"]["actions"] == ["update"]
    assert first["change"]["before"]["ipv6_pass"] is False and first["change"]["after"]["ipv6_pass"] is True


def test_plan_id_is_the_hash_of_the_body_whichever_is_asked_first() -> None:
    first_json, first_id = make_plan(), make_plan()
    doc = first_json.to_json()  # to_json hashes the body it made (the id is not asked yet)
    assert doc["plan_id"] == compute_plan_id({k: v for k, v in doc.items() if k != "plan_id"})
    assert doc["plan_id"] == first_json.plan_id == first_id.plan_id == first_id.to_json()["plan_id"]


def test_plan_targets_are_exact(plan: Plan) -> None:
    obs, want = observed(), intended()
    for node in plan.nodes:
        assert node.intended == want[node.node]
        assert apply_changes(obs[node.node], node.changes) == want[node.node]


def test_saved_plan_records_changes_and_rebuilds_exact_targets(plan: Plan, saved: Path) -> None:
    doc = json.loads(saved.read_text())
    assert all("intended" not in n for n in doc["nodes"])  # changes + fingerprints only
    back, obs, want = read_plan(saved), observed(), intended()
    for node in back.nodes:
        assert node.intended is None
        target = node.target_for(obs[node.node])
        assert target == want[node.node]
        assert target.fingerprint() == node.intended_fingerprint


def test_saved_plan_refuses_a_target_it_does_not_reach(saved: Path) -> None:
    back, obs = read_plan(saved), observed()
    node = back.node("node-2")
    forged = replace(node, intended_fingerprint="sha256:" + "0" * 64)
    with pytest.raises(PlanError, match="do not lead to its target"):
        forged.target_for(obs["node-2"])
    with pytest.raises(PlanError, match="state does not match the plan"):
        node.target_for(replace(obs["node-2"], config=DatapathConfig(ct_timeout_syn_s=5)))


def test_summary_counts_replace_as_add_and_destroy(plan: Plan) -> None:
    assert plan.summary.line == "Plan: 7 to add, 5 to change, 3 to destroy."


def test_tampered_plan_is_refused(saved: Path) -> None:
    doc = json.loads(saved.read_text())
    doc["nodes"][1]["resource_changes"][0]["change"]["after"]["ipv6_pass"] = False
    saved.write_text(json.dumps(doc))
    with pytest.raises(PlanError, match="plan file was modified: plan_id does not match its content"):
        read_plan(saved)


def test_other_major_version_is_refused(saved: Path) -> None:
    doc = json.loads(saved.read_text())
    doc["format_version"] = "3.0"
    saved.write_text(json.dumps(doc))
    with pytest.raises(PlanError, match=r"format_version 3.0 is not supported"):
        read_plan(saved)


def test_plan_text_is_the_stdlib_pretty_json_in_utf8(plan: Plan, tmp_path: Path) -> None:
    """The file keeps json.dumps(indent=2, sort_keys=True)'s layout; text beyond ASCII (a policy
    name, a label value) is written as UTF-8 and read back unchanged."""
    wide = replace(plan, warnings=(PlanWarning("policy café · 10.0.0.0/8 → world", "détail"),))
    saved = write_plan(wide, tmp_path / "wide.json")
    text = saved.read_bytes().decode("utf-8")
    assert text == json.dumps(wide.to_json(), indent=2, sort_keys=True, ensure_ascii=False) + "\n"
    assert "café · 10.0.0.0/8 → world" in text
    back = read_plan(saved)
    assert back == wide and back.warnings[0].summary == "policy café · 10.0.0.0/8 → world"


def test_unreadable_plan_names_the_file(tmp_path: Path) -> None:
    missing = tmp_path / "nope.json"
    with pytest.raises(PlanError, match=r"nope.json: cannot read the plan file"):
        read_plan(missing)
    garbage = tmp_path / "garbage.json"
    garbage.write_text("{oops")
    with pytest.raises(PlanError, match=r"garbage.json: not a meshctl plan file"):
        read_plan(garbage)
    latin1 = tmp_path / "latin1.json"
    latin1.write_bytes('{"format_version": "café"}'.encode("latin-1"))
    with pytest.raises(PlanError, match=r"latin1.json: not a meshctl plan file \(not UTF-8 text\)"):
        read_plan(latin1)


def test_fresh_plan_passes_and_stale_ones_are_refused(plan: Plan) -> None:
    fps = {name: ns.fingerprint() for name, ns in observed().items()}
    check_fresh(plan, fps, STATE)
    moved = replace(observed()["node-2"], config=DatapathConfig(ct_timeout_syn_s=5))
    with pytest.raises(PlanStaleError) as err:
        check_fresh(plan, {**fps, "node-2": moved.fingerprint()}, STATE)
    assert str(err.value) == (
        "Saved plan is stale: node-2 changed since the plan was made "
        f"(fingerprint {fps['node-2']}, now {moved.fingerprint()})"
    )
    with pytest.raises(PlanStaleError, match=r"serial 3, now 4"):
        check_fresh(plan, fps, replace(STATE, serial=4))
    with pytest.raises(PlanStaleError, match="lineage"):
        check_fresh(plan, fps, replace(STATE, lineage="other"))


def test_saved_plan_records_compact_component_digests(saved: Path) -> None:
    node = json.loads(saved.read_text())["nodes"][1]["observed_digests"]
    assert node["ipcache"][0] == 4 and len(node["ipcache"][1]) == 16
    assert node["policies"] == {node_sha(node): "0:21-22"}  # one shared empty map, two endpoints
    assert read_plan(saved).node("node-2").digests is not None


def node_sha(digests: dict[str, object]) -> str:
    (sha,) = digests["policies"]  # type: ignore[misc]
    return str(sha)


def test_format_2_0_files_are_still_read(saved: Path) -> None:
    doc = json.loads(saved.read_text())
    body = {k: v for k, v in doc.items() if k != "plan_id"}
    body["format_version"] = "2.0"
    del body["cuts"]  # 2.2
    del body["rules"]  # 2.3
    for key in ("staged", "enforcing", "staged_impact"):  # 2.4
        del body[key]
    for node in body["nodes"]:
        del node["observed_digests"]
    saved.write_text(json.dumps({"plan_id": compute_plan_id(body), **body}))
    old = read_plan(saved)
    assert old.format_version == "2.0" and all(n.digests is None for n in old.nodes)
    assert old.node("node-2").target_for(observed()["node-2"]) == intended()["node-2"]
    moved = replace(observed()["node-2"], config=DatapathConfig(ct_timeout_syn_s=5))
    assert explain_stale(old, {"node-2": moved}, {}) == [
        "  node-2: changed (the plan file records no per-component digests)"
    ]


def test_cuts_round_trip_and_name_their_changes(plan: Plan, saved: Path) -> None:
    doc = json.loads(saved.read_text())
    assert doc["cuts"][0] == {
        "src": "world", "dst": "demo/database", "protocol": "tcp", "port": 5432, "count": 2,
        "changes": ["node-2 policy demo/database ingress deny reserved:world any"],
    }
    back = read_plan(saved)
    assert back.cuts == plan.cuts and back.cut_connections == 3
    addresses = {c.address for c in back.changes}
    assert all(a in addresses for row in back.cuts for a in row.changes)


def test_format_2_1_files_without_cuts_are_still_read(saved: Path) -> None:
    doc = json.loads(saved.read_text())
    body = {k: v for k, v in doc.items() if k != "plan_id"}
    body["format_version"] = "2.1"
    del body["cuts"]
    del body["rules"]
    for key in ("staged", "enforcing", "staged_impact"):
        del body[key]
    saved.write_text(json.dumps({"plan_id": compute_plan_id(body), **body}))
    old = read_plan(saved)
    assert old.format_version == "2.1" and old.cuts == ()
    assert old.plan_id == compute_plan_id(body)  # round-trips: no "cuts" key is added



def test_rules_name_every_cookie_of_the_target(plan: Plan, saved: Path) -> None:
    """Format 2.3: the rule behind each cookie the target holds (apply records them for flows)."""
    doc = json.loads(saved.read_text())
    held = {e.cookie for ns in intended().values() for m in ns.policies.values() for e in m.values()}
    assert {int(c) for c in doc["rules"]} == held & set(dict(plan.rules))
    assert dict(read_plan(saved).rules) == dict(plan.rules) and plan.rules
