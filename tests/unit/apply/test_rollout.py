"""Rollout order: canary first, then batches in config order; unchanged nodes skipped."""

from __future__ import annotations

import pytest

from meshctl.apply.rollout import rollout_waves
from meshctl.errors import ApplyError

NODES = ["n1", "n2", "n3", "n4", "n5"]


def test_canary_then_batches() -> None:
    waves = rollout_waves(NODES, ["n3"], 2)
    assert [w.nodes for w in waves] == [("n3",), ("n1", "n2"), ("n4", "n5")]
    assert [w.canary for w in waves] == [True, False, False]
    assert [w.index for w in waves] == [0, 1, 2]
    assert waves[0].label == "canary 0: n3"


def test_no_canary_batch_of_one() -> None:
    waves = rollout_waves(NODES[:3], [], 1)
    assert [w.nodes for w in waves] == [("n1",), ("n2",), ("n3",)]
    assert not any(w.canary for w in waves)


def test_only_changed_nodes_roll_out() -> None:
    waves = rollout_waves(NODES, ["n1"], 10, changed=["n4", "n2"])
    assert [w.nodes for w in waves] == [("n2", "n4")]
    assert not waves[0].canary
    assert rollout_waves(NODES, ["n1"], 3, changed=[]) == []


def test_every_node_exactly_once() -> None:
    waves = rollout_waves(NODES, ["n5", "n2"], 2)
    flat = [n for w in waves for n in w.nodes]
    assert sorted(flat) == sorted(NODES)
    assert waves[0].nodes == ("n5", "n2")


@pytest.mark.parametrize(("canary", "batch"), [(["nx"], 1), ([], 0)])
def test_bad_rollout_config(canary: list[str], batch: int) -> None:
    with pytest.raises(ApplyError):
        rollout_waves(NODES, canary, batch)
