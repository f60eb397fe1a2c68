"""`meshctl encryption rollout`: plan and apply the phased WireGuard steps until nothing is left.

Each step is an ordinary plan + apply (journalled, verified by the apply engine, reverted on
failure). Between steps the WireGuard side of every node is observed and must equal what the
step intended (keys generated on the node excepted), before the next step may start.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field
from typing import TYPE_CHECKING

from meshctl.errors import ApplyError

if TYPE_CHECKING:
    from meshctl.app.workspace import Workspace
    from meshctl.nodestate import NodeState

MAX_STEPS = 6  # enable 3, disable 2, rotation 3 (+1 of slack)


@dataclass
class Step:
    number: int
    plan_id: str
    changes: int
    addresses: list[str] = field(default_factory=list)
    probed: list[str] = field(default_factory=list)  # nodes on which the apply's probes ran
    unprobed: dict[str, str] = field(default_factory=dict)  # applied node -> why no probe ran

    @property
    def verdict(self) -> str:
        """What was verified, in words: "verified" only when every applied node was probed."""
        if not self.unprobed:
            return "applied and verified"
        why = ", ".join(f"{n} ({w})" for n, w in self.unprobed.items())
        return f"applied, WireGuard state checked; not verified by probes: {why}"


def verify_step(ws: Workspace, intended: dict[str, NodeState]) -> None:
    """Every node's live WireGuard side is the step's target (a "" key: any generated key)."""
    from dataclasses import replace

    live = ws.backend.observe_many(list(intended))  # the lab, or each node's agent
    for node, want in intended.items():
        got = live[node].encryption
        target = want.encryption
        if target.interface and not target.public_key:
            target = replace(target, public_key=got.public_key if got.public_key else "?")
        if got != target:
            raise ApplyError(f"node {node}: WireGuard state after the step differs from its target")


def rollout(ws: Workspace, on_event: Callable[[str], None] | None = None,
            max_steps: int = MAX_STEPS) -> list[Step]:
    """Apply safe steps until the plan is empty; returns the steps taken."""
    from meshctl.app.apply import apply_plan
    from meshctl.app.plan import make_plan
    from meshctl.dataplane.wireguard import rotation

    say = on_event or (lambda _m: None)
    steps: list[Step] = []
    for number in range(1, max_steps + 1):
        with ws.lock("encryption rollout"):
            outcome = make_plan(ws, lock_held=True)
            plan = outcome.plan
            if not plan.has_changes:
                live = {n: s.encryption for n, s in outcome.observed.items()}
                rotation.settle(ws.state_dir, live)
                say(f"step {number}: no changes, encryption rollout complete")
                return steps
            changes = [c for n in plan.nodes for c in n.changes]
            say(f"step {number}: {len(changes)} change(s)")
            applied = apply_plan(ws, plan, on_event=say, lock_held=True)
            if not applied.result.ok:
                raise ApplyError(f"encryption rollout step {number} failed: {applied.result.failure}")
            verify_step(ws, {n.node: n.intended for n in plan.nodes})
            result = applied.result
            step = Step(number, plan.plan_id, len(changes), [c.address for c in changes],
                        [n for n in result.applied if n in result.verified],
                        {n: w for n, w in result.unverified.items() if n in result.applied})
            say(f"step {number}: {step.verdict}")
            steps.append(step)
    raise ApplyError(f"encryption rollout did not converge in {max_steps} steps")
