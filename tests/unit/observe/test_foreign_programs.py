"""Where a program meshctl did not attach runs relative to meshctl's (pure parse of the hooks)."""

from __future__ import annotations

from meshctl.nodestate import ForeignProgram
from meshctl.observe.programs import RawHook, foreign_programs

OURS = {10, 11}


def test_positions_follow_the_run_order() -> None:
    hooks = [
        RawHook("lxc1", "tcx-ingress", ((7, "early"), (10, "from_pod"), (8, "late"))),
        RawHook("lxc1", "tc-egress", ((9, "cls"),)),  # classic tc runs after the tcx chain
        RawHook("eth9", "tcx-egress", ((5, "alone"),)),  # no program of meshctl on that hook
        RawHook("lxc2", "tcx-egress", ((11, "to_pod"),)),
    ]
    assert foreign_programs(hooks, OURS) == [
        ForeignProgram("eth9", "tcx-egress", 5, "alone", ""),
        ForeignProgram("lxc1", "tc-egress", 9, "cls", "after"),
        ForeignProgram("lxc1", "tcx-ingress", 7, "early", "before"),
        ForeignProgram("lxc1", "tcx-ingress", 8, "late", "after"),
    ]


def test_only_meshctls_programs_is_nothing_to_report() -> None:
    assert foreign_programs([RawHook("lxc1", "tcx-ingress", ((10, "from_pod"),))], OURS) == []
