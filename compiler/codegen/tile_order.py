"""A conv or gemm nest's tiles walked as a travelling-salesman path (`--tile-order=tsp`).

Scan walks a conv nest's output-channel tiles naive and its spatial tiles (and input-channel
tiles) serpentine: at every turn the blocks on chip at the end of one walk are the first the
next walk needs. The TSP order merges the two outer loops into one `tile.for` over the grid of
output tiles and walks it in an explicit order (`order path [...]`), a path over the grid whose
edge cost is the DRAM bytes of moving from one output tile to the next given what is on chip:
with the input-channel loop serpentine, the next tile starts on the input-channel blocks the
previous one ended on, and reuses the last `slots` of them (the buffer's slots) of every
load whose block is the same (the input block: same spatial tile; the weight block and bias:
same output-channel tile). Fragmented edge tiles are points of the grid like the others, with
their own (smaller) blocks.

    tile.for %oc[%toc] = 0 to 64 step 32 order naive {                  Scan
      tile.for %n[%tn] = 0 to 1 step 1, %oh[%toh] = 0 to 14 step 4 cores 1 order serpentine {
        tile.for %ic[%tic] = 0 to 96 step 32 order serpentine { ... }
    tile.for %oc[%toc] = 0 to 64 step 32, %n[%tn] = 0 to 1 step 1, %oh[%toh] = 0 to 14 step 4     TSP
        cores 1 order path [0, 1, 2, 3, 7, 6, 5, 4] attributes {scan_outer = 1 : i64, search_ms = 3 : i64} {
      tile.for %ic[%tic] = 0 to 96 step 32 order serpentine { ... }

The merged loop starts with the path Scan walks (`scan_outer`: how many of its dimensions were
the outer, naive loop's), which networkx's approximation algorithms then improve: greedy
(`greedy_tsp`) and the Scan path are the starting points of simulated annealing
(`simulated_annealing_tsp`, seeded: the same path every time), on the complete graph of the
grid's points plus one dummy point joined to all at no cost (a cycle through it is a path).
tile-layers keeps the path only when the cost model's walk of the nest moves fewer DRAM bytes
than the Scan path (`passes/tile_layers.py`), so the TSP order never moves more than Scan.
`search_ms` is the search's CPU time. Nests with more than `MAX_POINTS` output tiles, dealt to
more than one core, or inside a batch loop keep Scan's loops.
"""

from __future__ import annotations

import math
import time
from collections.abc import Callable, Sequence

from xdsl.dialects.builtin import IntegerAttr, StringAttr, i64
from xdsl.ir import Block, Region, SSAValue

from nncc.compiler.codegen.context import Lowering
from nncc.dialects import tile

MAX_POINTS = 400  # output tiles a path is searched over (the complete graph has n^2/2 edges)
SEED = 0
SCAN_OUTER = "scan_outer"  # the merged loop's attribute: dimensions of Scan's outer (naive) loop
SEARCH_MS = "search_ms"  # the merged loop's attribute: the path search's CPU time


def scan_loops(nest: tile.NestOp) -> tuple[tile.ForOp, tile.ForOp] | None:
    """Scan's two outer loops of a conv nest: a naive loop in the nest's body whose only op is
    a serpentine loop on one core around a serpentine loop (input channels); else None."""
    for outer in nest.block.ops:
        if not isinstance(outer, tile.ForOp) or outer.order.data != "naive":
            continue
        ops = list(outer.block.ops)
        if len(ops) != 1 or not isinstance(ops[0], tile.ForOp):
            continue
        inner = ops[0]
        cores = inner.cores.value.data if inner.cores is not None else 1
        if inner.order.data == "serpentine" and cores == 1 and any(
                isinstance(op, tile.ForOp) and op.order.data == "serpentine" for op in inner.block.ops):
            return outer, inner
    return None


def scan_path(bounds: Sequence[tuple[int, int, int]], outer: int) -> list[int]:
    """The points of a loop over `bounds` in the order Scan walks them: the first `outer`
    dimensions row-major, the others row-major and reversed every other time."""
    counts = [-(-(high - low) // step) for low, high, step in bounds]
    rows, cols = math.prod(counts[:outer]), math.prod(counts[outer:])
    return [row * cols + (col if row % 2 == 0 else cols - 1 - col) for row in range(rows) for col in range(cols)]


def merge_scan_loops(nest: tile.NestOp) -> tile.ForOp | None:
    """Scan's outer and inner loop of `nest` merged into one loop walked in Scan's path (order
    path, attribute `scan_outer`); None when the nest has no such loops."""
    found = scan_loops(nest)
    if found is None:
        return None
    outer, inner = found
    bounds = outer.bounds + inner.bounds
    if math.prod(-(-(high - low) // step) for low, high, step in bounds) > MAX_POINTS:
        return None
    merged = tile.ForOp(bounds, Region(Block(arg_types=[tile.INDEX] * (2 * len(bounds)))), "path",
                        1, scan_path(bounds, len(outer.bounds)))
    for old, new in zip([*outer.block.args, *inner.block.args], merged.block.args):
        new.name_hint = old.name_hint
        old.replace_all_uses_with(new)
    for op in list(inner.block.ops):
        op.detach()
        merged.block.add_op(op)
    merged.attributes[SCAN_OUTER] = IntegerAttr(len(outer.bounds), i64)
    nest.block.insert_op_before(merged, outer)
    outer.detach()
    outer.erase(safe_erase=False)
    return merged


# --------------------------------------------------------------------------- the path


def grid_points(loop: tile.ForOp) -> list[tuple[int, ...]]:
    """(iv, extent) values of every block argument of `loop`, per point in row-major order."""
    points: list[tuple[int, ...]] = [()]
    for low, high, step in loop.bounds:
        points = [point + (v, min(step, high - v)) for point in points for v in range(low, high, step)]
    return points


def block_loads(loop: tile.ForOp) -> tuple[tile.ForOp, list[tile.LoadOp]] | None:
    """The serpentine loop (input channels) in `loop`'s body, and the loads in its body."""
    for op in loop.block.ops:
        if isinstance(op, tile.ForOp) and op.order.data == "serpentine" and len(op.bounds) == 1:
            return op, [load for load in op.block.ops if isinstance(load, tile.LoadOp)]
    return None


def savings(loop: tile.ForOp, slots: int) -> Callable[[int, int], int]:
    """saving(a, b): the DRAM bytes the walk does not move when point b follows point a (the
    last `slots` input-channel blocks of every load whose block is the same at both)."""
    points = grid_points(loop)
    inner = block_loads(loop)
    if inner is None:
        return lambda a, b: 0
    ic_loop, loads = inner
    (low, high, step), = ic_loop.bounds
    reused = min(slots, -(-(high - low) // step))
    position = {arg: i for i, arg in enumerate(loop.block.args)}
    ic, tic = ic_loop.block.args
    # per load: which of the merged loop's block arguments its block depends on, and its bytes per point
    keys, sizes = [], []
    for load in loads:
        used = [position.get(value) for value in load.indices if value not in (ic, tic)]
        if any(i is None for i in used):  # an index computed in the loop: never the same block
            used = list(range(len(loop.block.args)))
        used = sorted(set(used))
        keys.append([tuple(point[i] for i in used) for point in points])
        sizes.append([4 * math.prod(load.sizes.data.eval(
            [value_at(value, point, position, ic, tic, low, min(step, high - low)) for value in load.indices], []))
            for point in points])

    def saving(a: int, b: int) -> int:
        return reused * sum(size[b] for key, size in zip(keys, sizes) if key[a] == key[b])
    return saving


def value_at(value: SSAValue, point: tuple[int, ...], position: dict, ic: SSAValue, tic: SSAValue, ic0: int,
             tic0: int) -> int:
    if value is ic:
        return ic0
    if value is tic:
        return tic0
    i = position.get(value)
    return point[i] if i is not None else 0


def search_path(loop: tile.ForOp, slots: int) -> list[int]:
    """A short path over `loop`'s points (networkx: greedy and the current path improved by
    simulated annealing, seeded), edge cost the bytes a step moves beyond what it reuses."""
    import networkx as nx
    from networkx.algorithms import approximation

    count = loop.points
    saving = savings(loop, slots)
    table = [[saving(a, b) for b in range(count)] for a in range(count)]
    most = max((max(row) for row in table), default=0) or 1
    graph = nx.Graph()
    dummy = count
    for a in range(count):
        graph.add_edge(dummy, a, weight=0.0)
        for b in range(a + 1, count):  # symmetric: a block's bytes are the same wherever it is loaded
            graph.add_edge(a, b, weight=100.0 * (most - table[a][b]) / most)
    current = list(tile.ints(loop.path))

    def cost(path: list[int]) -> float:
        return sum(graph[a][b]["weight"] for a, b in zip(path, path[1:]))

    starts = [current]
    if count > 2:
        greedy = approximation.greedy_tsp(graph, source=dummy)
        starts.append(greedy[1:-1])
    best = min(starts, key=cost)
    if count > 3:
        cycle = approximation.simulated_annealing_tsp(graph, [dummy, *best, dummy], source=dummy, seed=SEED,
                                                      temp=10, max_iterations=10, N_inner=100, alpha=0.05)
        if cost(cycle[1:-1]) < cost(best):
            best = cycle[1:-1]
    return best


def tsp_order(nest: tile.NestOp, slots: int, bytes_moved: Callable[[], int]) -> tile.ForOp | None:
    """Merge Scan's loops of `nest` and walk them in a searched path when `bytes_moved()` (the
    cost model's DRAM bytes of the nest as it stands) says it moves fewer bytes than Scan's
    path; the merged loop (None: the nest keeps Scan's loops)."""
    start = time.process_time()
    loop = merge_scan_loops(nest)
    if loop is None:
        return None
    scan = list(tile.ints(loop.path))
    path = search_path(loop, slots)
    if path != scan:
        scan_bytes = bytes_moved()
        loop.set_path(path)
        if bytes_moved() >= scan_bytes:
            loop.set_path(scan)
    loop.attributes[SEARCH_MS] = IntegerAttr(round(1000 * (time.process_time() - start)), i64)
    return loop


# --------------------------------------------------------------------------- compared


def other_orders(lowering: Lowering, nest: tile.NestOp) -> list[tuple[Callable, tile.NestOp]]:
    """For `compare_orders`: (record, the nest walked in another order) for a nest with a Scan
    or path loop: naive order (`Lowering.record_naive_order`) and, for a path, Scan's path (the
    row's `predicted_dram_bytes_serpentine_order`; its `tsp_search_ms` recorded now)."""
    loops = [op for op in nest.block.walk() if isinstance(op, tile.ForOp)]
    if not any(loop.order.data in ("serpentine", "path") for loop in loops):
        return []
    naive = nest.clone()
    for loop in (op for op in naive.block.walk() if isinstance(op, tile.ForOp)):
        loop.order = StringAttr("naive")
        loop.properties.pop("path", None)
    variants = [(lowering.record_naive_order, naive)]
    paths = [loop for loop in loops if loop.path is not None and SCAN_OUTER in loop.attributes]
    if paths:
        scan = nest.clone()
        for loop in (op for op in scan.block.walk() if isinstance(op, tile.ForOp)):
            if loop.path is not None and SCAN_OUTER in loop.attributes:
                loop.set_path(scan_path(loop.bounds, loop.attributes[SCAN_OUTER].value.data))
        variants.append((lambda prediction: add_to_row(lowering, "predicted_dram_bytes_serpentine_order", int(
            prediction.dram_read_bytes + prediction.dram_write_bytes)), scan))
        add_to_row(lowering, "tsp_search_ms", sum(loop.attributes[SEARCH_MS].value.data for loop in paths
                                                  if SEARCH_MS in loop.attributes))
    return variants


def add_to_row(lowering: Lowering, key: str, value: int) -> None:
    row = lowering.predictions.setdefault(lowering.layer_index, {"name": lowering.layer_name})
    row[key] = row.get(key, 0) + value
