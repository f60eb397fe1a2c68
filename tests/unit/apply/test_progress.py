"""Apply progress: the engine reports each node's phase; stderr shows a live display or lines."""

from __future__ import annotations

import io
import re
from dataclasses import dataclass
from ipaddress import IPv4Network

from rich.console import Console

from meshctl.apply.engine import ApplyEngine, NodeWork, RolloutSettings
from meshctl.apply.gates import CheckOutcome
from meshctl.cli.progress import LinePrinter, LiveProgress, apply_progress
from meshctl.nodestate import FrozenMap, IpcacheEntry, NodeState

NODES = ("n1", "n2", "n3")


class Driver:
    def __init__(self, dropping: str = "") -> None:
        self.live = {n: NodeState(n) for n in NODES}
        self.dropping, self.reads = dropping, 0

    def observe(self, node: str) -> NodeState:
        return self.live[node]

    def reconcile(self, node: str, current: NodeState, target: NodeState) -> None:
        self.live[node] = target

    def drop_counts(self, node: str) -> dict[tuple[int, int, int], int]:
        self.reads += node == self.dropping
        return {(2, 2, 0): self.reads if node == self.dropping else 0}


class Journal:
    def begin(self, node: str, before: NodeState, after: NodeState) -> None: ...

    def done(self, node: str) -> None: ...

    def reverted(self, node: str) -> None: ...


class Recorder:
    """An on_event sink with phases, as meshctl.cli.progress provides."""

    def __init__(self) -> None:
        self.messages: list[str] = []
        self.phases: list[tuple[str, str, str]] = []

    def __call__(self, message: str) -> None:
        self.messages.append(message)

    def phase(self, node: str, phase: str, wave: str = "") -> None:
        self.phases.append((node, phase, wave))


@dataclass(frozen=True)
class Check:
    name: str
    from_: str
    to: str = "192.0.2.1"
    port: int = 80
    protocol: str = "TCP"
    expect: str = "allowed"


PODS = {f"d/{n}": n for n in NODES}


def run(sink: object, dropping: str = "", probed: tuple[str, ...] = NODES) -> object:
    """Every node in `probed` gets one check from its pod: only those can be verified."""
    target = FrozenMap({IPv4Network("10.0.1.0/24"): IpcacheEntry(256)})
    work = [NodeWork(n, NodeState(n), NodeState(n, ipcache=target)) for n in NODES]
    settings = RolloutSettings(canary=("n1",), batch_size=2, verify_window_s=0.1)
    engine = ApplyEngine(Driver(dropping), Journal(), lambda c: CheckOutcome(c, c.expect), settings,
                         on_event=sink, sleep=lambda _s: None)  # type: ignore[arg-type]
    return engine.run(work, list(NODES), [Check(f"out-{n}", f"d/{n}") for n in probed], PODS)


def test_engine_reports_every_phase_of_every_node_in_order() -> None:
    rec = Recorder()
    assert run(rec).ok  # type: ignore[attr-defined]
    n1 = [p for node, p, _ in rec.phases if node == "n1"]
    assert n1 == ["waiting", "journal", "reconcile", "checks", "drop gate", "verified"]
    waves = {node: wave for node, p, wave in rec.phases if p == "waiting"}
    assert waves["n1"].startswith("canary") and waves["n2"] == waves["n3"] != waves["n1"]
    assert rec.messages  # the lines are still sent


def test_failed_wave_is_marked_failed_then_reverted() -> None:
    rec = Recorder()
    assert not run(rec, dropping="n2").ok  # type: ignore[attr-defined]
    n2 = [p for node, p, _ in rec.phases if node == "n2"]
    assert n2[-2:] == ["failed", "reverted"]
    assert [p for node, p, _ in rec.phases if node == "n1"][-1] == "verified"


def test_a_node_on_which_no_probe_ran_is_not_called_verified() -> None:
    rec = Recorder()
    result = run(rec, probed=("n1",))
    assert result.ok  # type: ignore[attr-defined]
    final = {node: p for node, p, _ in rec.phases}
    assert final == {"n1": "verified", "n2": "not verified", "n3": "not verified"}
    assert "node n2: applied, not verified: no endpoints: nothing to probe" in rec.messages
    assert not any(m.endswith(": verified") and "n2" in m for m in rec.messages)
    assert result.summary().splitlines() == [  # type: ignore[attr-defined]
        "Apply complete: 3 node(s) updated, 1 verified by 1 probe(s).",
        "Not verified (applied, no probe ran): n2 (no endpoints: nothing to probe), "
        "n3 (no endpoints: nothing to probe).",
    ]


def test_a_plain_callable_still_gets_lines_only() -> None:
    lines: list[str] = []
    assert run(lines.append).ok  # type: ignore[attr-defined]
    assert any("verified" in line for line in lines)


def test_not_a_terminal_prints_timestamped_lines() -> None:
    out = io.StringIO()
    with apply_progress(Console(file=out, force_terminal=False, width=120, soft_wrap=True)) as sink:
        assert type(sink) is LinePrinter
        run(sink)
    lines = out.getvalue().splitlines()
    assert lines and all(re.match(r"^\s*\d+\.\d\ds ", line) for line in lines)
    assert any(line.endswith(": verified") for line in lines)
    assert "━" not in out.getvalue()  # no progress bar in a log


def test_terminal_shows_one_task_per_node_with_its_phase() -> None:
    out = io.StringIO()
    console = Console(file=out, force_terminal=True, width=120, color_system=None)
    with apply_progress(console) as sink:
        assert isinstance(sink, LiveProgress)
        run(sink, dropping="n2")
        assert set(sink.tasks) == set(NODES)
        assert sink.phases == {"n1": "verified", "n2": "reverted", "n3": "reverted"}
        tasks = {t.id: t for t in sink.progress.tasks}
        assert all(tasks[sink.tasks[n]].stop_time is not None for n in NODES)  # every node settled
        assert tasks[sink.tasks["n1"]].completed == tasks[sink.tasks["n1"]].total
    text = out.getvalue()
    assert "n1" in text and "verified" in text and "reverted" in text
    assert "drop gate n2" in text and "FAILED" in text  # messages scroll above the display
    assert not sink.progress.live.is_started  # stopped on exit
