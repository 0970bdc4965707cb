"""Where a sweep's points run: a local process pool, or a Dask distributed cluster; and its bar.

Both executors call `finished(point, outcome)` in the calling process as each point ends (the
caller writes the point's file at once) and `gave_up(point, reason)` for a point no worker could
finish. A point that fails (`run_point` returns status failed: a layer that does not fit...) is a
result like any other. A worker that dies takes down only the point it was running:

- local pool (`concurrent.futures.ProcessPoolExecutor`, spawned processes): at most one point
  per worker is in flight, so when the pool breaks the points in flight are exactly those whose
  worker may have died; each is tried again in a new pool, alone (nothing else in flight), so a
  point that kills its worker again is known, and given up after `ATTEMPTS`;
- Dask: the scheduler moves a dead worker's task to another worker (up to its
  `distributed.scheduler.allowed-failures`, then `KilledWorker`); each point is its own future,
  so an error of one never touches the others. Models go to the cluster once each
  (`Client.scatter`), as bytes: workers on other hosts need not see the user's files.
"""

from __future__ import annotations

import sys
import time
from collections import deque
from collections.abc import Callable
from typing import Any

from nncc.support.errors import NnccError, one_line

ATTEMPTS = 2
"""Times a point may be in flight on a local worker that died before it is given up."""

Finished = Callable[[Any, dict], None]
GaveUp = Callable[[Any, str], None]


# --------------------------------------------------------------------------- local pool


def run_on_pool(points: list, workers: int, function: Callable, finished: Finished, gave_up: GaveUp) -> None:
    """Run `points` on `workers` local processes; `function(point)` (a module-level function: it
    is pickled by name) returns the outcome."""
    import multiprocessing
    from concurrent.futures import FIRST_COMPLETED, ProcessPoolExecutor, wait
    from concurrent.futures.process import BrokenProcessPool

    queue = deque(points)
    attempts = {id(point): 0 for point in points}
    context = multiprocessing.get_context("spawn")  # no copy of this process's threads or progress bar
    while queue:
        pool = ProcessPoolExecutor(max_workers=min(workers, len(queue)), mp_context=context)
        in_flight: dict = {}
        broken = False
        try:
            while (queue or in_flight) and not broken:
                while queue and len(in_flight) < workers:
                    if attempts[id(queue[0])] and in_flight:
                        break  # a point in flight when a worker died runs alone: if it kills
                    point = queue.popleft()  # its worker again, no other point is in flight
                    in_flight[pool.submit(function, point)] = point
                    if attempts[id(point)]:
                        break
                done, _ = wait(in_flight, return_when=FIRST_COMPLETED)
                for future in done:
                    point = in_flight.pop(future)
                    try:
                        outcome = future.result()
                    except BrokenProcessPool:
                        broken = True
                        in_flight[future] = point  # counted with the others in flight below
                        continue
                    finished(point, outcome)
            if broken:
                for future, point in in_flight.items():
                    attempts[id(point)] += 1
                    if attempts[id(point)] >= ATTEMPTS:
                        gave_up(point, f"a worker process died while running it, {ATTEMPTS} times")
                    else:
                        queue.appendleft(point)
        except BaseException:  # Ctrl-C, SIGTERM: the points in flight are not waited for
            stop_workers(pool)
            raise
        finally:
            pool.shutdown(wait=not broken, cancel_futures=True)


def stop_workers(pool) -> None:
    """Kill a pool's worker processes (an interrupted sweep must not leave them computing)."""
    for process in list(getattr(pool, "_processes", {}).values()):
        try:
            process.kill()
        except (OSError, AttributeError):
            pass


# --------------------------------------------------------------------------- Dask


def run_on_dask(points: list, address: str, function: Callable, finished: Finished, gave_up: GaveUp,
                timeout: float = 30.0) -> None:
    """Run `points` on the Dask distributed scheduler at `address` (tcp://HOST:PORT);
    `function(point, model_bytes)` returns the outcome."""
    try:
        from distributed import Client, as_completed
    except ImportError:
        raise NnccError("--scheduler needs Dask distributed: pip install 'dask[distributed]'") from None
    try:
        client = Client(address, timeout=timeout, set_as_default=False)
    except (OSError, TimeoutError) as error:
        raise NnccError(f"--scheduler {address}: cannot connect: {one_line(str(error))}") from None
    try:
        models: dict[str, Any] = {}
        for point in points:
            if point.model_sha256 not in models:
                with open(point.model_file, "rb") as file:
                    data = file.read()
                try:
                    models[point.model_sha256] = client.scatter(data, hash=False, timeout=timeout)
                except TimeoutError:
                    raise NnccError(f"--scheduler {address}: no worker took the model {point.model_file} within "
                                    f"{timeout:g} s (is a worker connected to the scheduler?)") from None
        futures = {}
        for point in points:
            future = client.submit(function, point, models[point.model_sha256], pure=False,
                                   key=f"nncc-sweep-{point.model}-{point.id}-{time.time_ns()}")
            futures[future] = point
        for future in as_completed(futures, loop=client.loop):
            point = futures[future]
            try:
                outcome = future.result()
            except Exception as error:  # KilledWorker, a cancelled or lost future: this point only
                gave_up(point, f"{type(error).__name__}: {one_line(str(error))[:300]}")
            else:
                finished(point, outcome)
            future.release()
    finally:
        client.close()


# --------------------------------------------------------------------------- progress


def bar_wanted(quiet: bool) -> bool:
    from nncc.support import progress

    return progress.wanted(quiet)


class Bar:
    """A rich bar on stderr: points done of all, failed, elapsed and time left. Points resumed
    from an earlier run count as done from the start (time left is estimated on this run's)."""

    def __init__(self, total: int, done: int, failed: int, enabled: bool):
        self.total, self.done, self.failed = total, done, failed
        self.enabled = enabled
        self.progress: Any = None
        self.task: Any = None
        self.started = time.monotonic()
        self.base = done

    def __enter__(self) -> Bar:
        if self.enabled:
            from rich.console import Console
            from rich.progress import (BarColumn, MofNCompleteColumn, Progress, SpinnerColumn, TextColumn,
                                       TimeElapsedColumn, TimeRemainingColumn)

            self.progress = Progress(
                SpinnerColumn(), TextColumn("sweep"), BarColumn(bar_width=30), MofNCompleteColumn(),
                TextColumn("points, {task.fields[failed]} failed"), TimeElapsedColumn(),
                TextColumn("left"), TimeRemainingColumn(), console=Console(stderr=True), transient=True,
                redirect_stdout=False, refresh_per_second=4)
            self.progress.start()
            self.task = self.progress.add_task("sweep", total=self.total, completed=self.done, failed=self.failed)
        return self

    def __exit__(self, *exc: object) -> None:
        if self.progress is not None:
            self.progress.stop()

    def advance(self, failed: bool) -> None:
        self.done += 1
        self.failed += failed
        if self.progress is not None:
            self.progress.update(self.task, completed=self.done, failed=self.failed)

    def print(self, line: str) -> None:
        """A line above the bar (stderr)."""
        if self.progress is not None:
            self.progress.console.print(line, highlight=False, markup=False, soft_wrap=True)
        else:
            print(line, file=sys.stderr)
