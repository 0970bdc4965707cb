"""Progress on stderr for long compiles and simulations: the stage, k of n, elapsed time.

A command-line tool turns it on; the compiler and the interpreter mark their work:

    with progress.reporting(progress.wanted(quiet=args.quiet)):          # a CLI
        ...
    with progress.stage("lowering", total=len(layers), unit="layers") as task:
        for layer in layers:
            task.update(detail=name)   # what is being worked on now
            ...
            task.advance()             # one more done

Off by default (library use, tests): `stage` then returns a handle whose methods do nothing.
On, a transient `rich` bar appears once the work has lasted `delay` seconds (1 by default),
one line per open stage (nested stages indented), and is erased whenever no stage is open:
the tool's own lines, printed between stages, never meet it, and stdout is never touched.
Counts reach the screen at most every `SHOW_EVERY` seconds, so a hot loop may advance per
item. rich is imported only when the bar first appears; this module imports nothing of nncc's.
"""

from __future__ import annotations

import sys
import threading
import time
from collections.abc import Iterator
from contextlib import contextmanager
from typing import IO, Any

DELAY = 1.0  # seconds of work before the bar appears
SHOW_EVERY = 0.1  # seconds between two counts sent to the bar
REDRAWS_PER_SECOND = 5  # each redraw costs ~3 ms of the work's time


class NullTask:
    """The handle of a stage while reporting is off: every method does nothing."""

    def __enter__(self) -> NullTask:
        return self

    def __exit__(self, *exc: object) -> None:
        return None

    def advance(self, steps: int = 1, detail: str | None = None) -> None:
        pass

    def update(self, completed: int | None = None, detail: str | None = None) -> None:
        pass


NULL_TASK = NullTask()
_reporter: Reporter | None = None


def wanted(quiet: bool = False, stream: IO[str] | None = None) -> bool:
    """Whether a tool should report: not `--quiet`, and stderr (or `stream`) is a terminal."""
    stream = sys.stderr if stream is None else stream
    isatty = getattr(stream, "isatty", None)
    return not quiet and isatty is not None and isatty()


def active() -> bool:
    return _reporter is not None


@contextmanager
def reporting(enabled: bool = True, console: Any = None, delay: float = DELAY) -> Iterator[None]:
    """Report the stages opened inside, on `console` (default: a rich Console on stderr).

    Does nothing when `enabled` is false or reporting is already on (the outer one reports)."""
    global _reporter
    if not enabled or _reporter is not None:
        yield
        return
    _reporter = Reporter(console, delay)
    try:
        yield
    finally:
        reporter, _reporter = _reporter, None
        reporter.close()


def stage(name: str, total: int | None = None, unit: str = "") -> NullTask | Task:
    """A stage of work, as a context manager yielding its handle; `total` items of `unit` if known."""
    if _reporter is None:
        return NULL_TASK
    return Task(_reporter, name, total, unit)


class Task:
    """An open stage's line: counts and detail, sent to the bar at most every SHOW_EVERY s."""

    def __init__(self, reporter: Reporter, name: str, total: int | None, unit: str):
        self.reporter, self.name, self.total, self.unit = reporter, name, total, unit
        self.completed = 0
        self.detail = ""
        self.started = time.monotonic()
        self.shown = 0.0
        self.id: Any = None

    def __enter__(self) -> Task:
        self.reporter.open(self)
        return self

    def __exit__(self, *exc: object) -> None:
        self.reporter.close_task(self)

    def advance(self, steps: int = 1, detail: str | None = None) -> None:
        self.completed += steps
        self.send(detail)

    def update(self, completed: int | None = None, detail: str | None = None) -> None:
        if completed is not None:
            self.completed = completed
        self.send(detail)

    def send(self, detail: str | None) -> None:
        changed = detail is not None and detail != self.detail
        if changed:
            self.detail = detail
        now = time.monotonic()
        if changed or now - self.shown >= SHOW_EVERY:
            self.shown = now
            self.reporter.show(self, redraw=changed)

    def count(self) -> str:
        if self.total is None:
            return f"{self.completed} {self.unit}" if self.completed else ""
        return f"{self.completed}/{self.total} {self.unit}".rstrip()


class Reporter:
    """The bar behind `reporting`: made (rich imported) and started once the work has lasted
    `delay`, stopped whenever no stage is open."""

    def __init__(self, console: Any, delay: float):
        self.console = console
        self.progress: Any = None  # rich's Progress, made when first shown
        self.lock = threading.Lock()
        self.tasks: list[Task] = []
        self.due = delay <= 0
        self.live = False
        self.timer = threading.Timer(max(delay, 0), self.on_time)
        self.timer.daemon = True
        if not self.due:
            self.timer.start()

    def on_time(self) -> None:
        with self.lock:
            self.due = True
            self.start_if_busy()

    def start_if_busy(self) -> None:
        if not self.due or not self.tasks or self.live:
            return
        if self.progress is None:
            self.progress = make_progress(self.console)
            for depth, task in enumerate(self.tasks):
                self.add(task, depth)
        self.progress.start()
        self.live = True

    def add(self, task: Task, depth: int) -> None:
        task.id = self.progress.add_task("  " * depth + task.name, total=task.total, count=task.count(),
                                         detail=task.detail, started=task.started)

    def open(self, task: Task) -> None:
        with self.lock:
            self.tasks.append(task)
            if self.progress is not None:
                self.add(task, len(self.tasks) - 1)
            self.start_if_busy()
            if self.live:
                self.progress.refresh()

    def show(self, task: Task, redraw: bool) -> None:
        """Send `task`'s count and detail to the bar; `redraw` now (a new detail) or at the next tick."""
        with self.lock:
            if task.id is not None:
                self.progress.update(task.id, completed=task.completed, count=task.count(),
                                     detail=task.detail, refresh=redraw and self.live)

    def close_task(self, task: Task) -> None:
        with self.lock:
            self.tasks.remove(task)
            if task.id is not None:
                self.progress.remove_task(task.id)
            if not self.tasks and self.live:
                self.progress.stop()  # transient: the bar is erased before the tool prints
                self.live = False

    def close(self) -> None:
        self.timer.cancel()
        with self.lock:
            if self.live:
                self.progress.stop()
                self.live = False


def make_progress(console: Any) -> Any:
    """rich's Progress, transient, on `console` (default stderr): one line per open stage."""
    from rich.console import Console
    from rich.progress import BarColumn, Progress, ProgressColumn, SpinnerColumn, TextColumn
    from rich.text import Text

    class Elapsed(ProgressColumn):
        """Time since the stage opened (perhaps before the bar appeared)."""

        def render(self, task: Any) -> Text:
            minutes, seconds = divmod(int(time.monotonic() - task.fields["started"]), 60)
            return Text(f"{minutes}:{seconds:02d}", style="progress.elapsed")

    return Progress(
        SpinnerColumn(), TextColumn("{task.description}"), BarColumn(bar_width=30),
        TextColumn("{task.fields[count]}"), TextColumn("{task.fields[detail]}", style="dim"), Elapsed(),
        console=console or Console(stderr=True), transient=True, redirect_stdout=False,
        refresh_per_second=REDRAWS_PER_SECOND,
    )  # fmt: skip
