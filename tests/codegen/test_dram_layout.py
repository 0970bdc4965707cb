"""dram-layout: a feature map between two load/store nests stored NHWC moves its tiles in long runs.

Nest `a` copies the input (NCHW, the host's layout) into %a; nest `b` reads %a's first 4 of 7
columns, all 16 channels. NCHW, that box is 16 x 7 runs of 4 floats (16 B); NHWC, 7 runs of
4 x 16 floats (256 B, 4 whole bursts each): the bursts and the DRAM bus time fall by 4x, and the
values are the same.
"""

import math

import numpy as np
import pytest
from xdsl.parser import Parser

from nncc.compiler.codegen.lower import lower_module
from nncc.compiler.pass_manager import run_passes
from nncc.compiler.registry import Registry
from nncc.compiler.weights import WeightStore, attach
from nncc.runtime import timing
from nncc.runtime.interpreter import Interpreter
from nncc.runtime.target import load_target

C, H, W, COLS = 16, 7, 7, 4

IR = f"""
builtin.module {{
  func.func @main(%x: tensor<1x{C}x{H}x{W}xf32>) -> tensor<1x{C}x{H}x{COLS}xf32> {{
    %a = tile.nest "a" (%x) -> tensor<1x{C}x{H}x{W}xf32> attributes {{op = "nn.copy"}} {{
    ^bb0(%X: tensor<1x{C}x{H}x{W}xf32>, %Y: tensor<1x{C}x{H}x{W}xf32>):
      %buf = tile.buffer "input" slots 1 : memref<{H}x{W}x{C}xf32, "AM">
      %out = tile.buffer "output" slots 1 : memref<{H}x{W}x{C}xf32, "AM">
      tile.load %X[0, 0, 0, 0] [1, {C}, {H}, {W}] -> %buf[0] dims [2, 3, 1]
      tile.map copy %buf[0] -> %out[0] shape [{H}, {W}, {C}]
      tile.store %out[0] -> %Y[0, 0, 0, 0] [1, {C}, {H}, {W}] dims [2, 3, 1]
    }} : (tensor<1x{C}x{H}x{W}xf32>) -> tensor<1x{C}x{H}x{W}xf32>
    %b = tile.nest "b" (%a) -> tensor<1x{C}x{H}x{COLS}xf32> attributes {{op = "nn.copy"}} {{
    ^bb0(%X: tensor<1x{C}x{H}x{W}xf32>, %Y: tensor<1x{C}x{H}x{COLS}xf32>):
      %buf = tile.buffer "input" slots 1 : memref<{H}x{COLS}x{C}xf32, "AM">
      %out = tile.buffer "output" slots 1 : memref<{H}x{COLS}x{C}xf32, "AM">
      tile.load %X[0, 0, 0, 0] [1, {C}, {H}, {COLS}] -> %buf[0] dims [2, 3, 1]
      tile.map copy %buf[0] -> %out[0] shape [{H}, {COLS}, {C}]
      tile.store %out[0] -> %Y[0, 0, 0, 0] [1, {C}, {H}, {COLS}] dims [2, 3, 1]
    }} : (tensor<1x{C}x{H}x{W}xf32>) -> tensor<1x{C}x{H}x{COLS}xf32>
    func.return %b : tensor<1x{C}x{H}x{COLS}xf32>
  }}
}}
"""


def run_copies(layout_pass: bool):
    registry = Registry.default()
    module = Parser(registry.context(), IR).parse_module()
    attach(module, WeightStore())
    run_passes(module, registry.pipeline("dram-layout{target=vector}" if layout_pass else "partition-cores{target=vector}"),
               registry.context())
    program = lower_module(module, WeightStore(), load_target("vector"))
    x = np.random.default_rng(0).standard_normal((1, C, H, W)).astype(np.float32)
    result = Interpreter(program).run({program.symbols_of("input")[0].name: x})
    return x, result


@pytest.mark.parametrize("layout_pass", [True, False])
def test_nhwc_feature_map_moves_whole_bursts(layout_pass):
    x, result = run_copies(layout_pass)
    (out,) = result.outputs.values()
    np.testing.assert_array_equal(out, x[..., :COLS])
    b = next(layer for layer in result.layers if layer.name == "b")
    vector = load_target("vector")
    if layout_pass:  # 7 rows of 4 pixels x 16 channels: 256 contiguous bytes each, burst-aligned (448 B per row)
        runs, run_bytes = H, 4 * COLS * C
        assert b.dram.read_bursts == H * run_bytes // 64 == 28
    else:  # a 16-byte run per channel and row
        runs, run_bytes = C * H, 4 * COLS
        touched = {4 * (c * H * W + h * W + w) // 64 for c in range(C) for h in range(H) for w in range(COLS)}
        assert b.dram.read_bursts == len(touched)
    # the timing model's DRAM bus time of that load: whole bursts per run at the sustained bandwidth
    bus = math.ceil(runs * math.ceil(run_bytes / 64) * 64 / (vector.dram_bytes_per_cycle * vector.dram.sustained_fraction))
    assert timing.dram_bus_cycles(vector, 4 * C * H * COLS, (runs, run_bytes)) == bus == (53 if layout_pass else 211)


def test_nhwc_load_is_faster():
    fast = next(layer for layer in run_copies(True)[1].layers if layer.name == "b")
    slow = next(layer for layer in run_copies(False)[1].layers if layer.name == "b")
    assert slow.cycles - fast.cycles == 211 - 53
