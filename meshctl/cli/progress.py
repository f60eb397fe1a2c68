"""The apply engine's progress on stderr: a live display on a terminal, timestamped lines elsewhere.

Both are `on_event` sinks for meshctl.apply.engine: called with each message, and told each
node's phase through `phase(node, phase, wave)`. On a terminal every node of the rollout gets a
task of a rich Progress (its wave, a bar over the phases, the phase, elapsed time) and messages
scroll above it; otherwise (CI, tests, pipes) one timestamped line per message, as before.
"""

from __future__ import annotations

import time
from collections.abc import Iterator
from contextlib import contextmanager

from rich.console import Console, RenderableType
from rich.progress import BarColumn, Progress, SpinnerColumn, Task, TaskID, TextColumn, TimeElapsedColumn
from rich.text import Text

from meshctl.apply.engine import PHASES

DONE = {"verified": "green", "not verified": "yellow", "failed": "bold red", "reverted": "yellow"}
MARKS = {"verified": "✓", "not verified": "?", "failed": "✗", "reverted": "↺"}


class MarkColumn(SpinnerColumn):
    """A spinner while the node works, then a mark for how it ended."""

    def render(self, task: Task) -> RenderableType:
        phase = str(task.fields.get("last", ""))
        if phase in MARKS:
            return Text(MARKS[phase], style=DONE[phase])
        return super().render(task)


class LinePrinter:
    """One timestamped line per engine message; phases are already in the messages."""

    def __init__(self, console: Console) -> None:
        self.console = console
        self.start = time.monotonic()

    def line(self, message: str) -> str:
        return f"[dim]{time.monotonic() - self.start:6.2f}s[/dim] {message}"

    def __call__(self, message: str) -> None:
        style = "bold red" if "FAILED" in message else ("green" if message.endswith(": ok") else "")
        self.console.print(self.line(message), style=style)

    def phase(self, node: str, phase: str, wave: str = "") -> None:
        """Lines only: nothing to redraw."""

    def close(self) -> None:
        """Nothing to stop."""


class LiveProgress(LinePrinter):
    """A rich Progress with one task per node; started at the first phase, stopped by close()."""

    def __init__(self, console: Console) -> None:
        super().__init__(console)
        self.progress = Progress(
            MarkColumn(),
            TextColumn("{task.fields[wave]:<14}"),
            TextColumn("[bold]{task.fields[node]:<12}"),
            BarColumn(bar_width=20),
            TextColumn("{task.fields[phase]}"),
            TimeElapsedColumn(),
            console=console,
            transient=False,
        )
        self.tasks: dict[str, TaskID] = {}
        self.phases: dict[str, str] = {}  # node -> last phase (what the display shows)
        self._started = False

    def __call__(self, message: str) -> None:
        style = "bold red" if "FAILED" in message else ("green" if message.endswith(": ok") else "")
        self.progress.console.print(self.line(message), style=style)  # scrolls above the display

    def phase(self, node: str, phase: str, wave: str = "") -> None:
        if not self._started:
            self.progress.start()
            self._started = True
        task = self.tasks.get(node)
        if task is None:
            task = self.progress.add_task(node, total=len(PHASES) - 1, node=node, wave="", phase="", last="")
            self.tasks[node] = task
        self.phases[node] = phase
        shown = f"[{DONE[phase]}]{phase}[/]" if phase in DONE else phase
        fields: dict[str, object] = {"phase": shown, "last": phase}
        if wave:
            fields["wave"] = wave.partition(":")[0]  # "canary 0: n1" -> "canary 0": nodes have rows
        if phase in PHASES:
            fields["completed"] = PHASES.index(phase)
        self.progress.update(task, **fields)  # type: ignore[arg-type]
        if phase in DONE:
            self.progress.stop_task(task)

    def close(self) -> None:
        if self._started:
            self.progress.stop()
            self._started = False


@contextmanager
def apply_progress(console: Console | None = None) -> Iterator[LinePrinter]:
    """The sink for this stderr: live on a terminal, lines otherwise; always stopped after."""
    con = console or Console(stderr=True, highlight=False, soft_wrap=True)
    sink = LiveProgress(con) if con.is_terminal and not con.is_dumb_terminal else LinePrinter(con)
    try:
        yield sink
    finally:
        sink.close()
