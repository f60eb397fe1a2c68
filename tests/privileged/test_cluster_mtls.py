"""examples/cluster in the lab: the node agents are the only way in, over mutual TLS.

`meshctl lab up` builds the nodes on the addresses of meshctl.toml, makes the lab CA and one
certificate per node, gives this host a link to the underlay and starts each node's agent in
its netns on its underlay address. Then plan, apply, drift, observe and status run with the lab
registry unreadable (MESHCTL_LAB_DIR names a plain file: any read of it fails), as from a CI
runner: everything they know comes from meshctl.toml, the inventory and the agents. A wrong CA or
a certificate of another node stops the command before any node is touched.
"""

from __future__ import annotations

import json
from collections.abc import Iterator
from pathlib import Path

import pytest
from apply_helpers import cli_lab, connect, example_copy, git_init, meshctl, unique_cluster

pytestmark = [pytest.mark.privileged, pytest.mark.lab]

CLUSTER = unique_cluster("t-mtls")


@pytest.fixture(scope="module")
def repo(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Path]:
    root = example_copy("cluster", tmp_path_factory.mktemp("mtls") / "repo", CLUSTER)
    with cli_lab(root):
        yield root
    from meshctl.lab import names

    assert not (Path("/sys/class/net") / names.host_link(CLUSTER)).exists(), "lab down removes the host link"


@pytest.fixture(scope="module")
def no_lab(tmp_path_factory: pytest.TempPathFactory) -> dict[str, str]:
    """An environment in which reading the lab registry fails: its directory is a plain file."""
    blocker = tmp_path_factory.mktemp("nolab") / "not-a-directory"
    blocker.write_text("")
    return {"MESHCTL_LAB_DIR": str(blocker)}


def test_the_registry_really_is_unreadable(repo: Path, no_lab: dict[str, str]) -> None:
    res = meshctl(repo, "lab", "status", env=no_lab)
    assert res.returncode == 1 and "is unreadable" in res.stderr


def test_the_lab_made_a_ca_and_keeps_keys_private(repo: Path) -> None:
    for name in ("ca.key", "client.key"):
        assert (repo / ".pki" / name).stat().st_mode & 0o077 == 0, name


def test_plan_apply_drift_observe_status_through_the_agents_only(repo: Path, no_lab: dict[str, str]) -> None:
    plan = meshctl(repo, "plan", "--detailed-exitcode", env=no_lab, timeout=120)
    assert plan.returncode == 2, plan.stdout + plan.stderr
    assert "+ node-2 policy demo/api ingress allow demo/frontend tcp/3000" in plan.stdout

    apply = meshctl(repo, "apply", "--auto-approve", env=no_lab, timeout=180)
    assert apply.returncode == 0, apply.stdout + apply.stderr
    assert "Apply complete: 3 node(s) updated, 3 verified by " in apply.stdout
    assert connect(CLUSTER, "demo/frontend", "demo/api", 3000)
    assert not connect(CLUSTER, "demo/frontend", "demo/database", 5432)

    drift = meshctl(repo, "drift", "--detailed-exitcode", env=no_lab, timeout=120)
    assert drift.returncode == 0, drift.stdout + drift.stderr
    again = meshctl(repo, "plan", "--detailed-exitcode", env=no_lab, timeout=120)
    assert again.returncode == 0, again.stdout + again.stderr

    observe = meshctl(repo, "observe", "--verdict", "DROPPED", "--to-pod", "demo/database", "-o", "json",
                      env=no_lab)
    assert observe.returncode == 0, observe.stderr
    drops = [json.loads(line) for line in observe.stdout.splitlines() if line.strip()]
    assert any(d["src_pod"] == "demo/frontend" and d["reason"] == "default deny" for d in drops), drops

    status = meshctl(repo, "status", "-o", "json", env=no_lab, timeout=120)
    assert status.returncode == 0, status.stdout + status.stderr
    nodes = json.loads(status.stdout)["nodes"]
    assert [n["agent"] for n in nodes] == [f"up (https://172.31.241.{i}:4250)" for i in (11, 12, 13)]
    assert all(n["drift"] == "no" for n in nodes)


def _serial(repo: Path) -> int:
    return int(json.loads((repo / "state" / "state.json").read_text())["serial"])


def test_an_agent_that_cannot_be_verified_stops_the_apply(repo: Path, no_lab: dict[str, str]) -> None:
    serial = _serial(repo)
    toml = repo / "meshctl.toml"
    original = toml.read_text()
    try:  # node-2's address now answers with node-3's agent
        toml.write_text(original.replace('address = "172.31.241.12"', 'address = "172.31.241.13"')
                        .replace('address = "172.31.241.13"\n\n[lab]', 'address = "172.31.241.12"\n\n[lab]'))
        res = meshctl(repo, "apply", "--auto-approve", env=no_lab, timeout=120)
        assert res.returncode == 1
        assert res.stderr.strip().splitlines() == [
            "Error: agent of node node-2: the agent at 172.31.241.13:4250 presents a certificate that "
            "does not name node node-2 (another node's agent, or a wrong address under [[nodes]])"]
    finally:
        toml.write_text(original)
    wrong_ca = {**no_lab, "MESHCTL_AGENT_CA": str(repo / ".pki" / "client.crt")}  # not the CA
    res = meshctl(repo, "plan", env=wrong_ca, timeout=60)
    assert res.returncode == 1 and "presents a certificate not signed by the CA" in res.stderr, res.stderr
    assert "Traceback" not in res.stderr
    assert _serial(repo) == serial, "nothing was applied"


def test_a_runner_without_the_state_dir_plans_from_the_nodes(repo: Path, no_lab: dict[str, str]) -> None:
    """A CI runner never saw the last apply: lineage, serial and tables come from the nodes'
    shares. A plan applied to one node only leaves the nodes at different serials: the next
    plan says so."""
    state_file = repo / "state" / "state.json"
    recorded = json.loads(state_file.read_text())
    state_file.unlink()
    plan = meshctl(repo, "plan", "--detailed-exitcode", "-o", "json", env=no_lab, timeout=120)
    assert plan.returncode == 0, plan.stdout + plan.stderr
    assert json.loads(plan.stdout)["state"] == {"lineage": recorded["lineage"], "serial": recorded["serial"]}

    policy = repo / "policies" / "frontend-to-api.yaml"
    original = policy.read_text()
    port = '- {port: "3000", protocol: TCP}'
    policy.write_text(original.replace(port, port + '\n            - {port: "8080", protocol: TCP}', 1))
    try:
        saved = repo / "node-2.plan.json"
        planned = meshctl(repo, "plan", "--node", "node-2", "--out", str(saved), env=no_lab, timeout=120)
        assert planned.returncode == 0, planned.stdout + planned.stderr
        state_file.unlink(missing_ok=True)  # the apply runs elsewhere too
        applied = meshctl(repo, "apply", str(saved), env=no_lab, timeout=180)
        assert applied.returncode == 0, applied.stdout + applied.stderr
        state_file.unlink()
        mixed = meshctl(repo, "plan", env=no_lab, timeout=120)
        assert mixed.returncode == 0, mixed.stdout + mixed.stderr
        serial = recorded["serial"]
        assert (f"the nodes hold different state serials: node-2 at {serial + 1}; "
                f"node-1, node-3 at {serial}") in mixed.stdout
    finally:
        policy.write_text(original)
    back = meshctl(repo, "apply", "--auto-approve", env=no_lab, timeout=180)
    assert back.returncode == 0, back.stdout + back.stderr
    assert _serial(repo) == recorded["serial"] + 2
    shares = [json.loads((repo / "state" / "agents" / n / "applied.json").read_text())
              for n in ("node-1", "node-2", "node-3")]
    assert {(s["lineage"], s["serial"]) for s in shares} == {(recorded["lineage"], recorded["serial"] + 2)}


def test_an_apply_waits_for_another_that_holds_a_node(repo: Path, no_lab: dict[str, str]) -> None:
    """Another apply session holds node-2 (as a second CI run would): an apply that needs node-2
    is refused with the holder named, and with --lock-timeout it waits until node-2 is free."""
    import threading
    import time

    from meshctl.backend.agents import agents_of
    from meshctl.source.config import CONFIG_FILE, parse_config

    policy = repo / "policies" / "frontend-to-api.yaml"
    original = policy.read_text()
    port = '- {port: "3000", protocol: TCP}'
    policy.write_text(original.replace(port, port + '\n            - {port: "8080", protocol: TCP}', 1))
    other = agents_of(parse_config((repo / CONFIG_FILE).read_text(), repo)).driver("sha256:other",
                                                                                   hold=["node-2"])
    try:
        refused = meshctl(repo, "apply", "--auto-approve", env=no_lab, timeout=120)
        assert refused.returncode == 1, refused.stdout + refused.stderr
        assert (f"Error: agent of node node-2: node node-2 is held by apply session {other.session_id} "
                "until ") in refused.stderr
        assert "(another apply is running); pass --lock-timeout (e.g. 5m) to wait for it" in refused.stderr
        release = threading.Timer(3.0, lambda: other.end_session([]))
        release.start()
        started = time.monotonic()
        waited = meshctl(repo, "apply", "--auto-approve", "--lock-timeout", "60s", env=no_lab, timeout=180)
        assert waited.returncode == 0, waited.stdout + waited.stderr
        assert time.monotonic() - started >= 2.5, "it waited for node-2"
        assert "Apply complete: 1 node(s) updated" in waited.stdout
    finally:
        other.end_session([])
        policy.write_text(original)
    back = meshctl(repo, "apply", "--auto-approve", env=no_lab, timeout=180)
    assert back.returncode == 0, back.stdout + back.stderr


def test_drift_names_a_node_it_could_not_read_and_exits_1(repo: Path, no_lab: dict[str, str]) -> None:
    toml = repo / "meshctl.toml"
    original = toml.read_text()
    try:  # node-2's and node-3's addresses swapped: neither agent can be verified
        toml.write_text(original.replace('address = "172.31.241.12"', 'address = "172.31.241.13"')
                        .replace('address = "172.31.241.13"\n\n[lab]', 'address = "172.31.241.12"\n\n[lab]'))
        drift = meshctl(repo, "drift", "--detailed-exitcode", env=no_lab, timeout=120)
    finally:
        toml.write_text(original)
    assert drift.returncode == 1, drift.stdout + drift.stderr
    assert "node node-1: no drift" in drift.stdout
    assert ("node node-3: NOT CHECKED: agent of node node-3: the agent at 172.31.241.12:4250 presents a "
            "certificate that does not name node node-3") in drift.stdout
    assert "node node-2: NOT CHECKED" in drift.stdout
    assert "No drift: the datapath matches" not in drift.stdout
    assert "No drift on the 1 node(s) read." in drift.stdout
    assert drift.stderr.strip() == "Error: 2 node(s) could not be checked: node-2, node-3"


def test_drift_compares_with_the_desired_state_at_a_git_revision(repo: Path, no_lab: dict[str, str]) -> None:
    """As Argo CD: HEAD is the reference. A commit not applied yet is drift, told apart from a
    change by hand; --ref compares with another revision; --heal applies HEAD."""
    git = git_init(repo, "the cluster as applied")
    applied_commit = git.head.commit.hexsha
    clean = meshctl(repo, "drift", "--detailed-exitcode", env=no_lab, timeout=120)
    assert clean.returncode == 0, clean.stdout + clean.stderr
    assert f"against the desired state at HEAD (commit {applied_commit[:12]})" in clean.stdout

    policy = repo / "policies" / "frontend-to-api.yaml"
    original = policy.read_text()
    port = '- {port: "3000", protocol: TCP}'
    policy.write_text(original.replace(port, port + '\n            - {port: "8080", protocol: TCP}', 1))
    git.git.commit("-am", "api takes 8080 too")
    ahead = meshctl(repo, "drift", "--detailed-exitcode", env=no_lab, timeout=120)
    assert ahead.returncode == 2, ahead.stdout + ahead.stderr
    assert ("+ node-2 policy demo/api ingress allow demo/frontend tcp/8080: in the desired state, "
            "not applied yet") in ahead.stdout
    before = meshctl(repo, "drift", "--detailed-exitcode", "--ref", "HEAD~1", env=no_lab, timeout=120)
    assert before.returncode == 0, before.stdout + before.stderr
    assert f"at HEAD~1 (commit {applied_commit[:12]})" in before.stdout

    healed = meshctl(repo, "drift", "--heal", env=no_lab, timeout=180)
    assert healed.returncode == 0, healed.stdout + healed.stderr
    assert "Healing: applying the desired state at HEAD (commit" in healed.stderr
    assert meshctl(repo, "drift", "--detailed-exitcode", env=no_lab, timeout=120).returncode == 0
    assert connect(CLUSTER, "demo/frontend", "demo/api", 3000)

    policy.write_text(original)
    git.git.commit("-am", "back to 3000 only")
    back = meshctl(repo, "apply", "--auto-approve", env=no_lab, timeout=180)
    assert back.returncode == 0, back.stdout + back.stderr


def test_uninstall_removes_meshctl_from_one_node(repo: Path, no_lab: dict[str, str]) -> None:
    """Through node-3's agent: its programs, maps and pins go, its record leaves the state, and
    the other nodes keep enforcing."""
    from meshctl.lab import names

    pins = names.pin_dir(CLUSTER) / "node-3"
    assert pins.is_dir()
    serial = _serial(repo)
    res = meshctl(repo, "uninstall", "--node", "node-3", "--auto-approve", env=no_lab, timeout=120)
    assert res.returncode == 0, res.stdout + res.stderr
    assert "node node-3: removed 2 program attachments, 1 endpoints, 1 policy maps" in res.stdout
    assert not pins.exists() and (names.pin_dir(CLUSTER) / "node-1").is_dir()
    assert _serial(repo) == serial + 1
    state = json.loads((repo / "state" / "state.json").read_text())
    assert "node-3" not in state["nodes"] and "node-1" in state["nodes"]
    assert not connect(CLUSTER, "demo/frontend", "demo/database", 5432)  # node-1 still drops it

    # `lab up` loads node-3's datapath again; its agent (still running) reads the new ring
    # buffer, so the next apply is verified by drops it records
    assert meshctl(repo, "lab", "up", timeout=120).returncode == 0
    again = meshctl(repo, "apply", "--auto-approve", env=no_lab, timeout=180)
    assert again.returncode == 0, again.stdout + again.stderr
    assert "Apply complete: 1 node(s) updated, 1 verified by " in again.stdout
