"""The tile searches of a model's conv, gemm and matmul shapes, on several processes.

A shape's search (`conv_width.choose_mapping` for a conv, `conv.choose_tiles` for a gemm or
matmul: the closed form over every tiling, then the shortlist timed on unrolled probe nests)
depends on the shape, its bias and the `Lowering`'s options, and on nothing another shape's
search does: it only adds entries keyed by its shape to `cost_cache`. So the first pass that
needs them (fuse-groups, else tile-layers) runs the searches of every distinct shape ahead
(`search_ahead`), on `workers` forked processes, and copies the entries each one added into its
own `cost_cache`; the walk over the layers then finds every choice already made. The choices
are those one process makes, by construction. `run_ahead` does the same for any such tasks
(fuse-groups: the predictions of its chains and of their layers).

    tile-layers{search-workers=2}     # ResNet-50: its 24 conv shapes, about half each

A task that fails (a layer whose tiles cannot fit) returns nothing: the walk runs it again
itself and reports the layer as without workers. With one worker, fewer than two tasks, or
where this process cannot fork (a daemonic worker; a platform without fork), nothing is forked.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from functools import partial
from typing import NamedTuple

from xdsl.ir import Operation

from nncc.compiler.codegen.context import Lowering, layer_name
from nncc.compiler.codegen.conv import ConvShape, choose_tiles
from nncc.compiler.codegen.conv_width import choose_mapping
from nncc.compiler.codegen.layers import conv_problem, has_bias
from nncc.compiler.codegen.lowering_table import STREAM_NESTS
from nncc.compiler.codegen.training_nest import BACKWARD_CONVS
from nncc.support import progress
from nncc.support.processes import may_fork


class Search(NamedTuple):
    """One shape to search: a conv (both lane mappings) or a gemm/matmul (the channels mapping)."""

    shape: ConvShape
    name: str  # the first layer of this shape, for messages
    bias: bool
    conv: bool


def search(lowering: Lowering, problem: Search) -> None:
    """Choose the tiles of `problem` as tile-layers does, leaving the choice in `cost_cache`
    (and that it was made: `searched`)."""
    if problem.conv:
        choose_mapping(lowering, problem.shape, problem.name, problem.bias)
    else:
        choose_tiles(lowering, problem.shape, problem.name, problem.bias)
    lowering.cost_cache[searched_key(problem)] = True


def conv_search(layer: Operation, lowering: Lowering) -> Search | None:
    """The tile search `tile_layer` runs for `layer` (a conv, gemm or matmul, a backward conv),
    else None."""
    if layer.name in STREAM_NESTS:
        return None
    if layer.name == "nn.conv2d_backward_filter":  # a gemm of its own (`training_nest.filter_tiles`)
        return None
    if layer.name in BACKWARD_CONVS:
        return Search(BACKWARD_CONVS[layer.name](layer, lowering), layer_name(layer), False, conv=False)
    problem = conv_problem(layer)
    if problem is None:
        return None
    return Search(problem, layer_name(layer), has_bias(layer), conv=layer.name.endswith("conv2d"))


def searched_key(problem: Search) -> tuple:
    return ("searched", problem.shape, problem.bias, problem.conv)


def searched(lowering: Lowering, problem: Search) -> bool:
    """Whether `cost_cache` holds `problem`'s choice already (an earlier pass searched it ahead)."""
    return searched_key(problem) in lowering.cost_cache


def distinct_searches(lowering: Lowering, problems: Sequence[Search]) -> list[Search]:
    """One search per shape (ResNet's repeated blocks), none already made, the largest first."""
    distinct: dict[tuple, Search] = {}
    for problem in problems:
        distinct.setdefault((problem.shape, problem.bias, problem.conv), problem)
    left = [problem for problem in distinct.values() if not searched(lowering, problem)]
    return sorted(left, key=lambda problem: -size(problem.shape))


def search_ahead(lowering: Lowering, problems: Sequence[Search], workers: int) -> None:
    """Search the distinct `problems` not searched yet on `workers` forked processes (the
    largest first, each worker taking the next when it is done) and merge what they found into
    `cost_cache`."""
    run_ahead(lowering, [partial(search, lowering, problem) for problem in distinct_searches(lowering, problems)],
              workers)


def run_ahead(lowering: Lowering, tasks: Sequence[Callable[[], object]], workers: int,
              stage: str = "searching tiles", unit: str = "shapes") -> None:
    """Run `tasks` (each only adds entries to `lowering.cost_cache`) on `workers` forked
    processes, each worker taking the next task in order when it is done, and merge the entries
    they added into `cost_cache`."""
    workers = min(workers, len(tasks))
    if workers < 2 or not may_fork():
        return
    import multiprocessing

    global _LOWERING, _TASKS
    _LOWERING, _TASKS = lowering, list(tasks)  # what the forked workers inherit
    try:
        with progress.stage(stage, total=len(tasks), unit=unit) as task, \
                multiprocessing.get_context("fork").Pool(workers) as pool:
            for entries in pool.imap_unordered(run_in_worker, range(len(tasks))):
                lowering.cost_cache.update(entries)
                task.advance()
    finally:
        _LOWERING, _TASKS = None, []


_LOWERING: Lowering | None = None
_TASKS: list[Callable[[], object]] = []


def run_in_worker(index: int) -> dict:
    """In a worker: the `cost_cache` entries task `index` added (none if it failed)."""
    cache = _LOWERING.cost_cache
    before = set(cache)
    try:
        _TASKS[index]()
    except Exception:  # noqa: BLE001  (the walk runs it again and reports it)
        return {}
    return {key: cache[key] for key in cache.keys() - before}


def size(s: ConvShape) -> int:
    """MACs of a shape: the larger, the more tilings and jobs to time (a rough order of the work)."""
    return s.n * s.o * s.oh * s.ow * s.cg * s.kh * s.kw
