"""Compile time of `nncc` command lines, as a user runs them (a benchmark, not a test).

    python benchmarks/bench_compile_time.py MODEL.onnx [--target vector] [--repeat 5] [--stages] [--nncc '-j 1']

Runs, `--repeat` times each and alternately (fresh processes, start-up included):

    nncc MODEL.onnx --target=T --program P -q                     # to the program written
    nncc MODEL.onnx --target=T --emit=tile -o P.tile.mlir -q      # to the tile stage written

and prints, per command line, the median and the lowest CPU seconds (user + system of the process
and of the children it waited for: the tile search's workers, the ONNX checker) and wall
seconds, with the load average before each run (a busy machine inflates wall time most, CPU time
too). `--stages` also runs each command line once in this process and prints the CPU seconds of
every progress stage (`support/progress.py`: import-onnx, each pass, searching tiles, lowering,
writing program), imports and the rest. `--nncc '-j 1'` adds arguments to every nncc run.
Issue 9's goals (ResNet-50 at 224, batch 1, `vector`, a 2-core machine): program written in
<= 5 s, `--emit=tile` in <= 3 s.
"""

from __future__ import annotations

import argparse
import os
import shlex
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path


def command_lines(model: Path, target: str, out: Path, extra: list[str]) -> dict[str, list[str]]:
    return {
        "program": ["--target", target, "--program", str(out / "p"), "-q", *extra],
        "emit=tile": ["--target", target, "--emit=tile", "-o", str(out / "p.tile.mlir"), "-q", *extra],
    }


def timed_run(model: Path, args: list[str]) -> tuple[float, float, float]:
    """(CPU seconds, wall seconds, load average) of one `nncc` process."""
    load = os.getloadavg()[0]
    start = time.perf_counter()
    process = subprocess.Popen([sys.executable, "-m", "nncc.compiler.cli", str(model), *args],
                               stdout=subprocess.DEVNULL)
    _, status, usage = os.wait4(process.pid, 0)
    wall = time.perf_counter() - start
    if os.waitstatus_to_exitcode(status) != 0:
        raise SystemExit(f"nncc {' '.join(args)} failed")
    return usage.ru_utime + usage.ru_stime, wall, load


def stage_seconds(model: Path, args: list[str]) -> list[tuple[str, float]]:
    """CPU seconds of each outermost progress stage of one run in this process, then the rest."""
    from contextlib import contextmanager

    from nncc.support import progress

    rows: list[tuple[str, float]] = []
    depth = [0]
    original = progress.stage

    def cpu() -> float:
        times = os.times()
        return times.user + times.system + times.children_user + times.children_system

    @contextmanager
    def stage(name, *a, **k):
        begin = cpu()
        depth[0] += 1
        try:
            with original(name, *a, **k) as task:
                yield task
        finally:
            depth[0] -= 1
            rows.append(("  " * depth[0] + name, cpu() - begin))

    begin = cpu()
    from nncc.compiler import cli  # the imports nncc does before compiling

    rows.append(("start-up imports", cpu() - begin))
    progress.stage = stage
    try:
        cli.main([str(model), *args])
    finally:
        progress.stage = original
    outer = sum(seconds for name, seconds in rows if not name.startswith(" "))
    rows.append(("the rest (imports while compiling, verifying, printing)", cpu() - begin - outer))
    return rows


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("model", type=Path)
    parser.add_argument("--target", default="vector")
    parser.add_argument("--repeat", type=int, default=5)
    parser.add_argument("--stages", action="store_true", help="also the CPU seconds per stage of one run")
    parser.add_argument("--stages-of", nargs=argparse.REMAINDER, help=argparse.SUPPRESS)  # one run, here
    parser.add_argument("--nncc", default="", metavar="ARGS", help="more arguments for every nncc run, e.g. '-j 1'")
    args = parser.parse_args()
    if args.stages_of is not None:
        for stage, seconds in stage_seconds(args.model, args.stages_of):
            print(f"  {stage:58s} {seconds:6.2f}")
        return
    with tempfile.TemporaryDirectory() as scratch:
        lines = command_lines(args.model, args.target, Path(scratch), shlex.split(args.nncc))
        runs: dict[str, list[tuple[float, float, float]]] = {name: [] for name in lines}
        for _ in range(args.repeat):
            for name, line in lines.items():
                runs[name].append(timed_run(args.model, line))
        for name, rows in runs.items():
            cpu, wall, load = zip(*rows)
            print(f"{name}: CPU median {statistics.median(cpu):.2f} s (lowest {min(cpu):.2f}), wall median "
                  f"{statistics.median(wall):.2f} s (lowest {min(wall):.2f}), load average "
                  f"{min(load):.1f}-{max(load):.1f}, {len(rows)} runs")
        if args.stages:
            for name, line in lines.items():  # each in a fresh process, as a user runs it
                print(f"\n{name}, CPU seconds per stage (one run):", flush=True)
                subprocess.run([sys.executable, __file__, str(args.model), "--stages-of", *line], check=True)


if __name__ == "__main__":
    main()
