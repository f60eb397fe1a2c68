"""The rollout order: canary nodes first, then the other nodes in batches.

The canary wave goes alone so a bad change hurts as few nodes as possible before verification
stops it; the remaining nodes follow in waves of `batch_size`, in the order the config lists
them. Nodes without changes are skipped entirely (nothing to apply, nothing to verify).
"""

from __future__ import annotations

from collections.abc import Iterable, Sequence
from dataclasses import dataclass

from meshctl.errors import ApplyError


@dataclass(frozen=True)
class Wave:
    """Nodes applied together, then verified together."""

    index: int
    nodes: tuple[str, ...]
    canary: bool = False

    @property
    def label(self) -> str:
        kind = "canary" if self.canary else "batch"
        return f"{kind} {self.index}: {', '.join(self.nodes)}"


def rollout_waves(
    nodes: Sequence[str], canary: Iterable[str], batch_size: int, *, changed: Iterable[str] | None = None
) -> list[Wave]:
    """Split `nodes` (config order) into waves: canary first, then batches of batch_size.

    `changed`, when given, limits the rollout to the nodes that have changes. A canary name that
    is not a node of the cluster is a config mistake and raises.
    """
    if batch_size < 1:
        raise ApplyError(f"rollout batch_size must be at least 1, got {batch_size}")
    known = list(dict.fromkeys(nodes))
    canaries = list(dict.fromkeys(canary))
    unknown = [c for c in canaries if c not in known]
    if unknown:
        raise ApplyError(f"rollout canary names unknown node(s): {', '.join(unknown)}")
    wanted = set(known if changed is None else changed)
    waves: list[Wave] = []
    first = tuple(n for n in canaries if n in wanted)
    if first:
        waves.append(Wave(0, first, canary=True))
    rest = [n for n in known if n in wanted and n not in canaries]
    for start in range(0, len(rest), batch_size):
        waves.append(Wave(len(waves), tuple(rest[start : start + batch_size])))
    return waves
