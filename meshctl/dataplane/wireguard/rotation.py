"""Pending key rotations: `meshctl encryption rotate --node N` records N and its current key.

The request lives in the state dir (wireguard-rotate.json, public keys only) so every later
plan - `meshctl plan`, `meshctl apply`, `meshctl encryption rollout` - keeps steering towards
it: unroute N on both ends, regenerate N's key on N, re-peer, re-route. A request is done once
N's live key differs from the recorded one.
"""

from __future__ import annotations

import json
from collections.abc import Mapping
from pathlib import Path

from meshctl.nodestate import WireguardState
from meshctl.state.atomic import atomic_write

FILE = "wireguard-rotate.json"


def pending(state_dir: Path) -> dict[str, str]:
    try:
        return dict(json.loads((state_dir / FILE).read_text()))
    except FileNotFoundError:
        return {}


def request(state_dir: Path, node: str, current_key: str) -> None:
    todo = pending(state_dir)
    todo[node] = current_key
    state_dir.mkdir(parents=True, exist_ok=True)
    atomic_write(state_dir / FILE, (json.dumps(todo, sort_keys=True, indent=1) + "\n").encode())


def active(state_dir: Path, live: Mapping[str, WireguardState]) -> frozenset[str]:
    """Nodes whose rotation is still to be done (their live key is still the old one)."""
    out = set()
    for node, old in pending(state_dir).items():
        w = live.get(node)
        if w is not None and w.interface and w.public_key == old:
            out.add(node)
    return frozenset(out)


def settle(state_dir: Path, live: Mapping[str, WireguardState]) -> None:
    """Forget finished requests (called after a rollout converged)."""
    still = {n: k for n, k in pending(state_dir).items() if n in active(state_dir, live)}
    if not still:
        (state_dir / FILE).unlink(missing_ok=True)
    else:
        atomic_write(state_dir / FILE, (json.dumps(still, sort_keys=True, indent=1) + "\n").encode())
