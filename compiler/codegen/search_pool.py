"""The tile searches of a model's conv, gemm and matmul shapes, on several processes.

A shape's search (`conv_width.choose_mapping` for a conv, `conv.choose_tiles` for a gemm or
matmul: the closed form over every tiling, then the shortlist timed on unrolled probe nests)
depends on the shape, its bias and the `Lowering`'s options, and on nothing another shape's
search does: it only adds entries keyed by its shape to `cost_cache`. So tile-layers runs the
searches of every distinct shape ahead (`search_ahead`), on `workers` forked processes, and
copies the entries each one added into its own `cost_cache`; the walk over the layers then
finds every choice already made. The choices are those one process makes, by construction.

    tile-layers{search-workers=2}     # ResNet-50: its 24 conv shapes, about half each

A search that fails (a layer whose tiles cannot fit) returns nothing: the walk searches that
shape again itself and reports the layer as without workers. With one worker, fewer than two
shapes, or where this process cannot fork (a daemonic worker; a platform without fork), nothing
is forked.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import NamedTuple

from nncc.compiler.codegen.context import Lowering
from nncc.compiler.codegen.conv import ConvShape, choose_tiles
from nncc.compiler.codegen.conv_width import choose_mapping
from nncc.support import progress
from nncc.support.processes import may_fork


class Search(NamedTuple):
    """One shape to search: a conv (both lane mappings) or a gemm/matmul (the channels mapping)."""

    shape: ConvShape
    name: str  # the first layer of this shape, for messages
    bias: bool
    conv: bool


def search(lowering: Lowering, problem: Search) -> None:
    """Choose the tiles of `problem` as tile-layers does, leaving the choice in `cost_cache`."""
    if problem.conv:
        choose_mapping(lowering, problem.shape, problem.name, problem.bias)
    else:
        choose_tiles(lowering, problem.shape, problem.name, problem.bias)


def search_ahead(lowering: Lowering, problems: Sequence[Search], workers: int) -> None:
    """Search the distinct `problems` on `workers` forked processes (the largest first, each
    worker taking the next when it is done) and merge what they found into `cost_cache`."""
    distinct: dict[tuple, Search] = {}
    for problem in problems:  # ResNet's repeated blocks: one search per shape
        distinct.setdefault((problem.shape, problem.bias, problem.conv), problem)
    problems = list(distinct.values())
    workers = min(workers, len(problems))
    if workers < 2 or not may_fork():
        return
    import multiprocessing

    global _LOWERING, _PROBLEMS
    _LOWERING, _PROBLEMS = lowering, problems  # what the forked workers inherit
    order = sorted(range(len(problems)), key=lambda i: -size(problems[i].shape))
    try:
        with progress.stage("searching tiles", total=len(problems), unit="shapes") as task, \
                multiprocessing.get_context("fork").Pool(workers) as pool:
            for entries in pool.imap_unordered(search_in_worker, order):
                lowering.cost_cache.update(entries)
                task.advance()
    finally:
        _LOWERING, _PROBLEMS = None, []


_LOWERING: Lowering | None = None
_PROBLEMS: list[Search] = []


def search_in_worker(index: int) -> dict:
    """In a worker: the `cost_cache` entries searching problem `index` added (none if it failed)."""
    cache = _LOWERING.cost_cache
    before = set(cache)
    try:
        search(_LOWERING, _PROBLEMS[index])
    except Exception:  # noqa: BLE001  (the walk searches it again and reports it)
        return {}
    return {key: cache[key] for key in cache.keys() - before}


def size(s: ConvShape) -> int:
    """MACs of a shape: the larger, the more tilings and jobs to time (a rough order of the work)."""
    return s.n * s.o * s.oh * s.ow * s.cg * s.kh * s.kw
