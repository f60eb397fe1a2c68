"""`meshctl plan` after a full plan that found nothing to do: an edit is planned incrementally.

On a real lab: the incremental plan of a policy edit equals `meshctl plan --full` (every
change, fingerprint and digest), it reads only the edited policy's endpoints, and apply takes it.
A node that drifted where the incremental plan did not read makes apply refuse the plan as stale.
"""

from __future__ import annotations

import json
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from apply_helpers import lab_of, meshctl, three_tier_copy, unique_cluster

pytestmark = [pytest.mark.privileged, pytest.mark.lab]

CLUSTER = unique_cluster("t-ap-inc")
INCREMENTAL = "Planned incrementally"


@pytest.fixture(scope="module")
def repo(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Path]:
    root = three_tier_copy(tmp_path_factory.mktemp("inc") / "repo", CLUSTER)
    toml = root / "meshctl.toml"
    toml.write_text(toml.read_text() + "\n[policy]\nimpactMaxPods = 0\n")  # plans without impact
    with lab_of(root):
        applied = _run(root, "apply", "--auto-approve")
        assert applied.returncode == 0, applied.stderr
        yield root


def _run(repo: Path, *args: str) -> Any:
    return meshctl(repo, *args, env={"MESHCTL_CACHE_DIR": str(repo.parent / "cache")})


def _content(plan_json: str) -> dict[str, Any]:
    """A JSON plan without what differs between two runs (when, and the id hashing it)."""
    doc = json.loads(plan_json)
    for key in ("plan_id", "created_at"):
        doc.pop(key)
    return doc  # type: ignore[no-any-return]


def _add_api_port(repo: Path, port: int) -> None:
    """Both policies of frontend-to-api.yaml (api's ingress, frontend's egress) allow `port` too."""
    path = repo / "policies" / "frontend-to-api.yaml"
    old = '- {port: "3000", protocol: TCP}'
    path.write_text(path.read_text().replace(old, f'{old}\n            - {{port: "{port}", protocol: TCP}}'))


def test_an_edit_is_planned_incrementally_as_the_full_plan_plans_it(repo: Path, tmp_path: Path) -> None:
    first = _run(repo, "plan", "--detailed-exitcode")
    assert first.returncode == 0 and INCREMENTAL not in first.stderr, first.stderr  # full: nothing to do
    _add_api_port(repo, 3001)
    saved = tmp_path / "inc.json"
    inc = _run(repo, "plan", "-o", "json", "--out", str(saved))
    assert inc.returncode == 0 and INCREMENTAL in inc.stderr, inc.stderr
    assert "read 2 of 4 endpoints' policy maps" in inc.stderr  # api and frontend: their policies changed
    full = _run(repo, "plan", "-o", "json", "--full")
    assert full.returncode == 0 and INCREMENTAL not in full.stderr
    assert _content(inc.stdout) == _content(full.stdout)
    assert _content(inc.stdout)["summary"]["change"] + _content(inc.stdout)["summary"]["add"] > 0

    applied = _run(repo, "apply", str(saved), "--auto-approve")
    assert applied.returncode == 0, applied.stderr
    again = _run(repo, "plan", "--detailed-exitcode")
    assert again.returncode == 0, again.stdout + again.stderr


def test_drift_the_incremental_plan_did_not_read_makes_its_plan_stale(repo: Path, tmp_path: Path) -> None:
    from meshctl.dataplane.libbpf import Map
    from meshctl.dataplane.maps import ENDPOINT_VALUE
    from meshctl.dataplane.node import NodeDatapath
    from meshctl.lab import registry

    assert _run(repo, "plan", "--full", "--detailed-exitcode").returncode == 0  # the baseline
    _add_api_port(repo, 3002)
    saved = tmp_path / "inc.json"
    inc = _run(repo, "plan", "--out", str(saved))
    assert inc.returncode == 0 and INCREMENTAL in inc.stderr, inc.stderr

    reg = registry.load(CLUSTER)
    assert reg is not None
    db = reg.pods["demo/database"]  # no edited policy selects it: the incremental plan did not read it
    pin = NodeDatapath(CLUSTER, db.node, reg.nodes[db.node].netns).map_pin("endpoints")
    with Map.from_pin(pin) as endpoints:
        value = endpoints.lookup(db.address.packed)
        assert value is not None
        ep, identity, flags = ENDPOINT_VALUE.unpack(value)
        endpoints.update(db.address.packed, ENDPOINT_VALUE.pack(ep, identity, flags ^ 1))
    stale = _run(repo, "apply", str(saved), "--auto-approve")
    assert stale.returncode == 1 and "Saved plan is stale" in stale.stderr, stale.stderr
    assert f"{db.node} changed since the plan was made" in stale.stderr
    healed = _run(repo, "apply", "--auto-approve")  # plans in full (it always does) and repairs it
    assert healed.returncode == 0, healed.stderr
