"""Interpreter speed on a synthetic conv-layer instruction stream (a benchmark, not a test).

    python benchmarks/bench_interpreter.py [--tiles 400]

The stream is what a conv layer mapped onto the `vector` target looks like: per output tile, a DMA
of a padded input tile (multicast to 2 cores' AM), 9 batched matmuls (one per 3x3 kernel position:
8 output rows x 14 pixels x 64 output channels x 64 input channels), a ReLU and a DMA back to DRAM,
double-buffered with semaphores. It prints instructions/s, simulated MACs/s, and what a ResNet-50
inference (4.1 GMAC at the same tile sizes) will take.
"""

from __future__ import annotations

import argparse
import time

import numpy as np

from nncc.runtime import isa
from nncc.runtime.interpreter import run
from nncc.runtime.program import Program, Symbol, from_bytes, to_bytes
from nncc.runtime.target import load_target

RESNET50_MACS = 4.1e9
ROWS, COLS, CIN, COUT = 8, 14, 64, 64  # output tile: 8 rows x 14 pixels, 64 -> 64 channels


def conv_tile_stream(tiles: int) -> Program:
    """A double-buffered 3x3 conv stream over `tiles` output tiles, alternating between 2 cores."""
    target = load_target("vector")
    in_rows, in_cols = ROWS + 2, COLS + 2
    in_tile = in_rows * in_cols * CIN * 4  # HWC layout
    out_tile = ROWS * COLS * COUT * 4
    weights = 9 * CIN * COUT * 4
    x_addr, w_addr, y_addr = 0, in_tile, in_tile + weights
    make = isa.make
    code = [
        make("layer", name="conv", nodes="Conv_0"),
        make("dma", src=("DRAM", w_addr), src_stride=(0, 0, 1), dst=("AM", 0), cores=(0, 1),
             dst_stride=(0, 0, 1), shape=(1, 1, 9 * CIN * COUT), signal=(10, 11)),
    ]  # fmt: skip
    for tile in range(tiles):
        core, buf = tile % 2, (tile // 2) % 2
        in_addr = weights + buf * in_tile
        out_addr = weights + 2 * in_tile + buf * out_tile
        free_in, full_in, done = 2 * core + buf, 4 + 2 * core + buf, 20 + 2 * core + buf
        code.append(
            make("dma", ch=core, src=("DRAM", x_addr), src_stride=(in_cols * CIN, CIN, 1), dst=("AM", in_addr),
                 cores=(core,), dst_stride=(in_cols * CIN, CIN, 1), shape=(in_rows, in_cols, CIN),
                 pad=(1, 1, 1, 1, 0, 0), wait=(free_in,) if tile >= 4 else (), signal=(full_in,))
        )  # fmt: skip
        for tap in range(9):
            dy, dx = divmod(tap, 3)
            wait = (full_in,) + ((10 + core,) if tile < 2 else ())
            code.append(
                make("matmul", core=core, batch=ROWS, mnk=(COLS, COUT, CIN),
                     a=("AM", in_addr + 4 * (dy * in_cols + dx) * CIN), a_stride=(in_cols * CIN, CIN, 1),
                     b=("AM", 4 * tap * CIN * COUT), b_stride=(0, COUT, 1),
                     c=("AM", out_addr), c_stride=(COLS * COUT, COUT, 1), acc=int(tap > 0),
                     wait=wait if tap == 0 else (), signal=(free_in,) if tap == 8 else ())
            )  # fmt: skip
        code.append(
            make("vact", core=core, func="relu", shape=(1, ROWS * COLS, COUT), x=("AM", out_addr), x_stride=(0, COUT, 1),
                 z=("AM", out_addr), z_stride=(0, COUT, 1), signal=(done,))
        )  # fmt: skip
        code.append(
            make("dma", ch=2 + core, src=("AM", out_addr), src_core=core, src_stride=(0, COUT, 1), dst=("DRAM", y_addr),
                 dst_stride=(0, COUT, 1), shape=(1, ROWS * COLS, COUT), wait=(done,))
        )  # fmt: skip
    symbols = [Symbol("x", "input", x_addr, (in_rows - 2, in_cols - 2, CIN)), Symbol("y", "output", y_addr, (ROWS * COLS, COUT))]
    program = Program(target, code, symbols, dram_bytes=y_addr + out_tile)
    program.add_data(w_addr, np.random.default_rng(1).standard_normal(9 * CIN * COUT).astype(np.float32) * 0.1)
    return program


def small_tile_stream(count: int) -> Program:
    """`count` small instructions (64-element vadd/relu on 4 cores, 256-byte DMAs): dispatch-bound."""
    target = load_target("vector")
    make = isa.make
    code = [make("layer", name="eltwise", nodes="Add_0")]
    flat = (0, 0, 1)
    for i in range(count // 4):
        core = i % 4
        code += [
            make("dma", ch=core, src=("DRAM", 0), src_stride=flat, dst=("AM", 0), cores=(core,), dst_stride=flat,
                 shape=(1, 1, 64), signal=(core,)),
            make("vadd", core=core, shape=(1, 1, 64), x=("AM", 0), x_stride=flat, y=("AM", 256), y_stride=flat,
                 z=("AM", 512), z_stride=flat, wait=(core,)),
            make("vact", core=core, func="relu", shape=(1, 1, 64), x=("AM", 512), x_stride=flat, z=("AM", 512),
                 z_stride=flat, signal=(4 + core,)),
            make("dma", ch=core, src=("AM", 512), src_core=core, src_stride=flat, dst=("DRAM", 256), dst_stride=flat,
                 shape=(1, 1, 64), wait=(4 + core,)),
        ]  # fmt: skip
    return Program(target, code, [Symbol("x", "input", 0, (64,))], dram_bytes=512)


def timed(program: Program) -> tuple[float, object]:
    began = time.perf_counter()
    result = run(program)
    return time.perf_counter() - began, result


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--tiles", type=int, default=400)
    args = parser.parse_args()
    program = conv_tile_stream(args.tiles)
    run(conv_tile_stream(4))  # warm-up
    seconds, result = timed(program)
    count = len(program.instructions)
    macs_per_instr = ROWS * COLS * COUT * CIN
    resnet_instructions = RESNET50_MACS / result.macs * count
    print(f"{count} instructions, {result.macs / 1e9:.3f} GMAC simulated in {seconds:.2f} s")
    print(f"  {count / seconds:,.0f} instructions/s, {result.macs / seconds / 1e9:.2f} simulated GMAC/s")
    print(f"  simulated machine: {result.cycles} cycles, MAC utilisation {result.mac_utilization:.1%}")
    print(
        f"ResNet-50 inference at these tile sizes ({macs_per_instr} MACs per matmul): "
        f"~{resnet_instructions:,.0f} instructions, ~{RESNET50_MACS / result.macs * seconds:.1f} s"
    )
    small = small_tile_stream(40_000)
    small_seconds, _ = timed(small)
    rate = len(small.instructions) / small_seconds
    blob = to_bytes(small)
    began = time.perf_counter()
    from_bytes(blob)
    load_us = (time.perf_counter() - began) / len(small.instructions) * 1e6
    print(f"{len(small.instructions)} small instructions (64-element tiles, 4 cores) in {small_seconds:.2f} s")
    print(f"  {rate:,.0f} instructions/s: dispatch overhead {1e6 / rate:.0f} us per instruction")
    print(f"  loading the .nnbin: {load_us:.1f} us per instruction")
    budget = 300_000
    worst = budget * (1 / rate + load_us * 1e-6) + RESNET50_MACS / result.macs * seconds
    print(f"Worst case, ResNet-50 as {budget:,} instructions: ~{worst:.1f} s (load + dispatch + MAC work)")


if __name__ == "__main__":
    main()
