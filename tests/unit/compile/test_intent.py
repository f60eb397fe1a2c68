"""The intent a node keeps: compiled again from its JSON, it gives exactly the state the plan made."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from meshctl.compile import EndpointTable, IdentityTable, compile_cluster
from meshctl.compile.intent import NodeIntent
from meshctl.compile.spec import spec_from_desired
from meshctl.nodestate import NodeState
from meshctl.source import load_desired

EXAMPLES = Path(__file__).resolve().parents[3] / "examples"


def _with_ips(desired):  # type: ignore[no-untyped-def]
    ips = {}
    for node in desired.config.nodes:
        hosts = list(node.pod_cidr.hosts())[2:]
        for pod in desired.pods:
            if pod.node_name == node.name and pod.pod_ip is None:
                ips[pod.key] = hosts.pop(0)
    return desired.with_pod_ips(ips)


@pytest.mark.parametrize("example", ["three-tier", "services", "cluster", "production"])
def test_the_intent_compiles_to_the_planned_state(example: str) -> None:
    desired = _with_ips(load_desired(EXAMPLES / example))
    compiled = compile_cluster(desired, IdentityTable(), EndpointTable(), "build-1")
    spec = spec_from_desired(desired)
    assert any(state.policies for state in compiled.nodes.values())
    for node, state in compiled.nodes.items():
        text = NodeIntent.of(spec, "build-1", state, plan_id="p").to_text()
        intent = NodeIntent.from_json(json.loads(text))  # through JSON, as the node keeps it
        tables = compiled.identities, compiled.endpoint_ids
        again, _ = intent.compile(node, spec.namespaces, spec.pods, *tables)
        assert again == state, node


def test_a_changed_policy_changes_what_the_intent_compiles() -> None:
    desired = _with_ips(load_desired(EXAMPLES / "three-tier"))
    compiled = compile_cluster(desired, IdentityTable(), EndpointTable(), "b")
    spec = spec_from_desired(desired)
    raw = NodeIntent.of(spec, "b", NodeState("")).to_json()
    raw["policies"] = [p for p in raw["policies"] if p["name"] != "api-from-frontend"]
    fewer, _ = NodeIntent.from_json(raw).compile("node-2", spec.namespaces, spec.pods, compiled.identities,
                                                 compiled.endpoint_ids)
    assert fewer != compiled.nodes["node-2"]


@pytest.mark.parametrize("mangle, message", [
    (lambda d: d.update(format_version=9), "format_version 9"),
    (lambda d: d.pop("policies"), "not a node intent"),
    (lambda d: d.update(policies=[{"kind": "X"}]), "not a node intent"),
])
def test_a_bad_intent_is_a_value_error(mangle, message) -> None:  # type: ignore[no-untyped-def]
    desired = load_desired(EXAMPLES / "three-tier")
    raw = NodeIntent.of(spec_from_desired(desired), "b", NodeState("")).to_json()
    mangle(raw)
    with pytest.raises(ValueError, match=message):
        NodeIntent.from_json(raw)
