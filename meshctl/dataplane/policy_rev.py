"""The node's policy revision: the one number that makes tracked connections meet new policy.

bpf/lib/policy.h keeps it in the pinned ARRAY `policy_rev`; every conntrack entry remembers the
revision its forward direction was judged at, and a forward packet is judged again when the two
differ. Reconcile bumps it once everything of a change is written (ipcache, policies, endpoints),
so no packet is judged against a half-written change and every tracked connection is judged
against the whole of it. Runtime state, not intent: it is not part of NodeState or the plan.
"""

from __future__ import annotations

import sys
from pathlib import Path

from meshctl.dataplane.libbpf import Map

MAP_NAME = "policy_rev"
_KEY = b"\0\0\0\0"


def read_revision(pin_dir: Path) -> int | None:
    """The node's current revision; None when its object has no revision map (an old build)."""
    path = pin_dir / MAP_NAME
    if not path.exists():
        return None
    with Map.from_pin(path) as m:
        raw = m.lookup(_KEY)
    return 0 if raw is None else int.from_bytes(raw, sys.byteorder)


def bump_revision(pin_dir: Path) -> int | None:
    """Make every tracked connection of the node be judged again on its next forward packet.

    Returns the new revision (None without a revision map). One writer per node (reconcile runs
    under the apply lock), so read-then-write is enough; the 32-bit value wraps."""
    current = read_revision(pin_dir)
    if current is None:
        return None
    rev = (current + 1) & 0xFFFF_FFFF
    with Map.from_pin(pin_dir / MAP_NAME) as m:
        m.update(_KEY, rev.to_bytes(4, sys.byteorder))
    return rev
