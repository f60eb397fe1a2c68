"""Observe is lossless, on the real kernel maps of a lab node.

After any random sequence of byte-level inserts, deletes and value changes on the maps meshctl
owns (policy inner and outer maps, ipcache, endpoints, config, every load-balancer map), the plan
against the applied intent is empty exactly when the live bytes equal the applied bytes (and
exactly when the fingerprints are equal), and executing the plan restores the applied bytes.
"""

from __future__ import annotations

import re
import struct
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from apply_helpers import cli_lab, example_copy, meshctl, unique_cluster
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from meshctl.dataplane.libbpf import Map
from meshctl.dataplane.node import NodeDatapath
from meshctl.dataplane.reconcile import reconcile
from meshctl.errors import DataplaneError
from meshctl.nodestate import NodeState
from meshctl.observe import observe_node
from meshctl.plan import diff_node
from meshctl.plan.patch import apply_changes

pytestmark = [pytest.mark.privileged, pytest.mark.lab]

NODE = "node-1"
U32 = struct.Struct("<I")
# maps whose entries are intent (lb_flows, lb_affinity, ct, metrics, events are runtime)
PLAIN = ("config", "ipcache", "endpoints", "lb_services", "lb_backends", "lb_slots", "lb_config",
         "lb_settings")
ARRAYS = ("config", "lb_config", "lb_settings")
LPM = {"ipcache": 32, "policy": 64}
TARGETS = (*PLAIN, "policy", "policy_maps", "lb_maglev", "maglev_table")
MUTATIONS_WANTED = 300


@pytest.fixture(scope="module")
def lab(tmp_path_factory: pytest.TempPathFactory) -> Iterator[tuple[NodeDatapath, NodeState]]:
    """examples/services with Maglev on, applied; yields node-1's datapath and applied intent."""
    repo = example_copy("services", tmp_path_factory.mktemp("lossless") / "repo", unique_cluster("t-ll"))
    toml = repo / "meshctl.toml"
    toml.write_text(re.sub(r'(?m)^algorithm = ".*"$', 'algorithm = "maglev"', toml.read_text()))
    with cli_lab(repo):
        applied = meshctl(repo, "apply", "--auto-approve", timeout=300)
        assert applied.returncode == 0, applied.stdout + applied.stderr
        from meshctl.app.workspace import open_workspace
        from meshctl.state import load_state

        ws = open_workspace(repo)
        intended = load_state(ws.state_dir).nodes[NODE].intended
        yield NodeDatapath(ws.cluster, NODE, ws.netns[NODE]), intended


def snapshot(pins: Path) -> dict[str, Any]:
    """Every owned map's content as bytes (inner maps by content: their ids change on a swap)."""
    out: dict[str, Any] = {}
    for name in PLAIN:
        if (pins / name).exists():
            with Map.from_pin(pins / name) as m:
                out[name] = sorted(m.items())
    for outer_name, key in (("policy_maps", "policy"), ("lb_maglev", "maglev")):
        inner_of: dict[bytes, list[tuple[bytes, bytes]]] = {}
        with Map.from_pin(pins / outer_name) as outer:
            for k, v in outer.items():
                with Map.from_id(U32.unpack(v)[0]) as inner:
                    inner_of[k] = sorted(inner.items())
        out[key] = sorted(inner_of.items())
    return out


def _flip(data: bytes, material: bytes) -> bytes:
    """`data` with one byte changed (position and new bits from `material`)."""
    out = bytearray(data)
    pos = material[0] % len(out)
    out[pos] ^= material[1] or 1
    return bytes(out)


def _lpm_key(old: bytes, bits: int, material: bytes) -> bytes:
    """An LPM key near `old`: a prefix length the trie accepts and one data byte changed."""
    key = bytearray(_flip(old[4:], material[2:]) if material[4] & 1 else old[4:])
    return U32.pack(material[3] % (bits + 1)) + bytes(key)


def mutate(pins: Path, target: str, op: str, index: int, material: bytes) -> bool:
    """One byte-level change to a live map; False when there was nothing to change or the kernel
    refused it."""
    try:
        if target in ("policy_maps", "lb_maglev"):
            return _mutate_outer(pins / target, op, index)
        if target in ("policy", "maglev_table"):
            with Map.from_pin(pins / ("policy_maps" if target == "policy" else "lb_maglev")) as outer:
                inner_ids = sorted(U32.unpack(v)[0] for _, v in outer.items())
            if not inner_ids:
                return False
            with Map.from_id(inner_ids[index % len(inner_ids)]) as m:
                if target == "maglev_table":
                    op = "value"  # an array: values change, keys are fixed
                return _mutate_map(m, "policy" if target == "policy" else "", op, index, material)
        if not (pins / target).exists():
            return False
        with Map.from_pin(pins / target) as m:
            return _mutate_map(m, target, "value" if target in ARRAYS else op, index, material)
    except DataplaneError:
        return False


def _mutate_map(m: Map, kind: str, op: str, index: int, material: bytes) -> bool:
    items = sorted(m.items())
    if op == "insert" or not items:
        if kind in LPM:
            base = items[index % len(items)][0] if items else bytes(m.key_size)
            key = _lpm_key(base, LPM[kind], material)
        else:
            key = (material * 4)[5:5 + m.key_size]
        value = (material * 8)[7:7 + m.value_size]
        m.update(key, value)
        return True
    key, value = items[index % len(items)]
    if op == "delete":
        return m.delete(key)
    if op == "value":
        m.update(key, _flip(value, material))
        return True
    new_key = _lpm_key(key, LPM[kind], material) if kind in LPM else _flip(key, material)
    m.update(new_key, value)  # a key changed in place: the old entry goes, one at the new key comes
    if new_key != key:
        m.delete(key)
    return True


def _mutate_outer(path: Path, op: str, index: int) -> bool:
    """Maps of maps: remove an entry, or point one at another entry's inner map."""
    with Map.from_pin(path) as outer:
        items = sorted(outer.items())
        if not items:
            return False
        key, _ = items[index % len(items)]
        if op == "delete" or len(items) == 1:
            return outer.delete(key)
        other = items[(index + 1) % len(items)][1]
        if other == items[index % len(items)][1]:
            return False
        with Map.from_id(U32.unpack(other)[0]) as inner:
            outer.update(key, U32.pack(inner.fd))
        return True


mutation = st.tuples(
    st.sampled_from(TARGETS),
    st.sampled_from(["insert", "delete", "value", "key"]),
    st.integers(0, 1 << 16),
    st.binary(min_size=8, max_size=8),
)


def test_plan_is_empty_exactly_when_the_bytes_are_the_applied_ones(
    lab: tuple[NodeDatapath, NodeState],
) -> None:
    dp, intended = lab
    applied = snapshot(dp.pin_dir)
    assert diff_node(observe_node(dp.cluster, NODE, dp.netns), intended) == ()
    done = {"mutations": 0, "changed": 0}

    @settings(max_examples=110, deadline=None, suppress_health_check=list(HealthCheck), derandomize=True)
    @given(st.lists(mutation, min_size=1, max_size=5))
    def check(mutations: list[tuple[str, str, int, bytes]]) -> None:
        for target, op, index, material in mutations:
            done["mutations"] += mutate(dp.pin_dir, target, op, index, material)
        live = snapshot(dp.pin_dir)
        observed = observe_node(dp.cluster, NODE, dp.netns)
        changes = diff_node(observed, intended)
        assert (live == applied) == (not changes), [c.address for c in changes]
        assert (not changes) == (observed.fingerprint() == intended.fingerprint())
        done["changed"] += bool(changes)
        assert apply_changes(observed, changes) == intended  # the plan's target is the intent
        reconcile(dp, observed, intended)
        assert snapshot(dp.pin_dir) == applied
        assert diff_node(observe_node(dp.cluster, NODE, dp.netns), intended) == ()

    check()
    assert done["mutations"] >= MUTATIONS_WANTED, done
    assert done["changed"] >= 0.8 * 110, done  # nearly every example really changed the node
