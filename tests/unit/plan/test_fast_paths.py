"""The fast paths of plan making give exactly what the plain definitions give."""

from __future__ import annotations

import hashlib
import json
import sys
from dataclasses import replace
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[2] / "golden"))
from golden_scenario import intended, observed

from meshctl.nodestate import FrozenMap, NodeState, policy_map_text
from meshctl.plan import diff_node


def _merkle(state: NodeState) -> dict[str, object]:
    """canonical() with each policy map's rows replaced by the sha256 of their compact JSON."""
    body = state.canonical()
    body["policies"] = [
        [ep, hashlib.sha256(json.dumps(rows, separators=(",", ":")).encode()).hexdigest()]
        for ep, rows in body["policies"]
    ]
    return body


def test_fingerprint_is_sha256_of_the_canonical_json_with_map_digests() -> None:
    audited = intended()["node-2"]
    audited = replace(audited, endpoints=FrozenMap(
        {ip: replace(e, audit_ingress=True) for ip, e in audited.endpoints.items()}))
    assert audited.fingerprint() != intended()["node-2"].fingerprint()  # the audit flags count
    assert NodeState.from_canonical(audited.canonical()) == audited
    for states in (observed(), intended(), {"audited": audited}):
        for state in [*states.values(), NodeState("empty")]:
            body = json.dumps(_merkle(state), sort_keys=True, separators=(",", ":"))
            assert state.fingerprint() == "sha256:" + hashlib.sha256(body.encode()).hexdigest()


def test_policy_map_text_tells_equal_maps_from_different_ones() -> None:
    want = intended()["node-2"]
    for entries in want.policies.values():
        copy = FrozenMap(dict(entries))  # other objects, same content
        assert policy_map_text(copy) == policy_map_text(entries)
        assert json.loads(policy_map_text(entries)) == next(
            rows for ep, rows in want.canonical()["policies"] if want.policies[ep] is entries
        )


def test_diff_with_a_shared_memo_equals_fresh_diffs() -> None:
    obs, want = observed(), intended()
    memo: dict[tuple[int, int], bool] = {}
    for node in want:
        assert diff_node(obs[node], want[node], None, memo) == diff_node(obs[node], want[node])
