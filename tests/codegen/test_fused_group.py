"""Proof that fusion fits the loop-nest IR: MobileNetV2's inverted residual block at 56x56
(1x1 24->144, ReLU6; depthwise 3x3, ReLU6; 1x1 144->24; + input) as ONE hand-written
`tile.nest`, both 144-channel intermediates in on-chip buffers.

Rows are tiled in strips of 2 output rows (the first 1x1 recomputes the depthwise halo rows:
4 rows for 2), dealt to the cores; the 144 expanded channels are walked in blocks of 48, each
block going through the first 1x1, the depthwise and the second 1x1, which accumulates the
blocks (its reduction loop). The image border is zero in the first intermediate (a fill, then
the first 1x1 writes the rows inside the image), so the depthwise needs no padding logic.
Run on the interpreter for `edge` (1 core: matrix unit + post-processing vector unit) and
`vector` (4 cores), checked against numpy, and its DRAM traffic against a hand count: the
output is the only tensor written, the input (with halo rows, and again as the residual) and
the weights the only ones read.
"""

from __future__ import annotations

import math

import numpy as np
import pytest

from nncc.compiler.codegen.lower import lower_module
from nncc.compiler.ir_files import parse_module
from nncc.compiler.registry import Registry
from nncc.compiler.weights import WeightStore, attach
from nncc.runtime.interpreter import Interpreter
from nncc.runtime.target import load_target

H = W = 56
C, E, STRIP, BLOCK = 24, 144, 2, 48
ROW = (W + 2) * BLOCK  # elements of one row of the padded first intermediate

BLOCK_IR = """
builtin.module {{
  func.func @main(%x: tensor<1x24x56x56xf32>) -> tensor<1x24x56x56xf32> {{
    %w1 = nn.weight "w1" : tensor<144x24x1x1xf32>
    %b1 = nn.weight "b1" : tensor<144xf32>
    %wd = nn.weight "wd" : tensor<144x1x3x3xf32>
    %bd = nn.weight "bd" : tensor<144xf32>
    %w2 = nn.weight "w2" : tensor<24x144x1x1xf32>
    %b2 = nn.weight "b2" : tensor<24xf32>
    %y = tile.nest "block" (%x, %w1, %b1, %wd, %bd, %w2, %b2) -> tensor<1x24x56x56xf32> attributes {{op = "fused.group"}} {{
    ^bb0(%X: tensor<1x24x56x56xf32>, %W1: tensor<144x24x1x1xf32>, %B1: tensor<144xf32>, %WD: tensor<144x1x3x3xf32>, %BD: tensor<144xf32>, %W2: tensor<24x144x1x1xf32>, %B2: tensor<24xf32>, %Y: tensor<1x24x56x56xf32>):
      %W1p = tile.relayout %W1 shape [1, 144, 24, 1, 1] permutation [0, 3, 4, 2, 1] : tensor<144x24x1x1xf32> -> tensor<1x1x1x24x144xf32>
      %WDp = tile.relayout %WD shape [144, 9] permutation [1, 0] : tensor<144x1x3x3xf32> -> tensor<9x144xf32>
      %W2p = tile.relayout %W2 shape [1, 24, 144, 1, 1] permutation [0, 3, 4, 2, 1] : tensor<24x144x1x1xf32> -> tensor<1x1x1x144x24xf32>
      %in = tile.buffer "input" slots 2 : memref<4x56x24xf32, "{memory}">
      %w1b = tile.buffer "weight" slots 2 shared : memref<1200xf32, "{memory}">
      %wdb = tile.buffer "weight" slots 2 shared : memref<480xf32, "{memory}">
      %w2b = tile.buffer "weight" slots 2 shared : memref<1176xf32, "{memory}">
      %m1 = tile.buffer "intermediate" slots 2 : memref<4x58x48xf32, "{memory}">
      %m2 = tile.buffer "intermediate" slots 2 : memref<2x56x48xf32, "{memory}">
      %out = tile.buffer "output" slots 2 : memref<2x56x24xf32, "{memory}">
      tile.for %oh[%toh] = 0 to 56 step 2 cores {cores} order naive {{
        %top = tile.max [%oh - 1, 0]
        %bottom = tile.min [%oh + %toh + 1, 56]
        tile.load %X[0, 0, %top, 0] [1, 24, %bottom - %top, 56] -> %in[0] dims [2, 3, 1]
        tile.load %X[0, 0, %oh, 0] [1, 24, %toh, 56] -> %out[0] dims [2, 3, 1]
        tile.for %cb[%tcb] = 0 to 144 step 48 order naive {{
          tile.load %W1p[0, 0, 0, 0, %cb] [1, 1, 1, 24, %tcb] -> %w1b[0] dims [3, 4]
          tile.load %B1[%cb] [%tcb] -> %w1b[1152] dims [0]
          tile.load %WDp[0, %cb] [9, %tcb] -> %wdb[0] dims [0, 1]
          tile.load %BD[%cb] [%tcb] -> %wdb[432] dims [0]
          tile.load %W2p[0, 0, 0, %cb, 0] [1, 1, 1, %tcb, 24] -> %w2b[0] dims [3, 4]
          tile.load %B2[0] [24] -> %w2b[1152] dims [0]
          tile.fill %m1[0] sizes [%toh + 2, 58, 48] value 0.0
          tile.conv %in[0], %w1b[0] -> %m1[((%top - %oh + 1) * 58 + 1) * 48] sizes [%bottom - %top, 56, 24, 48] pitch [2784] kernel [1, 1] strides [1, 1] dilations [1, 1] bias %w1b[1152] act clip [0.0, 6.0]
          tile.depthwise %m1[0], %wdb[0] -> %m2[0] sizes [%toh, 56, 48] pitch [2784, 48] kernel [3, 3] strides [1, 1] dilations [1, 1] bias %wdb[432] act clip [0.0, 6.0]
          tile.conv %m2[0], %w2b[0] -> %out[0] sizes [%toh, 56, 48, 24] kernel [1, 1] strides [1, 1] dilations [1, 1] reduce %cb onto_output bias %w2b[1152]
        }}
        tile.store %out[0] -> %Y[0, 0, %oh, 0] [1, 24, %toh, 56] dims [2, 3, 1]
      }}
    }} : (tensor<1x24x56x56xf32>, tensor<144x24x1x1xf32>, tensor<144xf32>, tensor<144x1x3x3xf32>, tensor<144xf32>, tensor<24x144x1x1xf32>, tensor<24xf32>) -> tensor<1x24x56x56xf32>
    func.return %y : tensor<1x24x56x56xf32>
  }}
}}
"""

TARGETS = {"edge": ("BUF", 1), "vector": ("AM", 4)}


def weights(rng) -> dict[str, np.ndarray]:
    def normal(*shape, scale=1.0):
        return (rng.standard_normal(shape) * scale).astype(np.float32)
    return {"w1": normal(E, C, 1, 1, scale=0.3), "b1": normal(E, scale=0.5), "wd": normal(E, 1, 3, 3, scale=0.4),
            "bd": normal(E, scale=0.5), "w2": normal(C, E, 1, 1, scale=0.1), "b2": normal(C, scale=0.5)}


def reference(x: np.ndarray, p: dict[str, np.ndarray]) -> np.ndarray:
    """The block in numpy (float64): 1x1, ReLU6, depthwise 3x3 (zero padding), ReLU6, 1x1, + x."""
    x64 = x[0].astype(np.float64)
    m1 = np.clip(np.einsum("oc,chw->ohw", p["w1"][:, :, 0, 0], x64) + p["b1"][:, None, None], 0, 6)
    padded = np.pad(m1, ((0, 0), (1, 1), (1, 1)))
    m2 = sum(padded[:, i:i + H, j:j + W] * p["wd"][:, 0, i, j][:, None, None] for i in range(3) for j in range(3))
    m2 = np.clip(m2 + p["bd"][:, None, None], 0, 6)
    return (np.einsum("oc,chw->ohw", p["w2"][:, :, 0, 0], m2) + p["b2"][:, None, None] + x64)[None]


def dram_read_bytes(cores: int) -> int:
    """The input's strips with their halo rows (clipped at the image border), the input again as
    the residual, and every weight block once per wave of strips (multicast to the wave's cores)."""
    strips = range(0, H, STRIP)
    halo_rows = sum(min(oh + STRIP + 1, H) - max(oh - 1, 0) for oh in strips)
    blocks = E // BLOCK
    per_block = C * BLOCK + BLOCK + 9 * BLOCK + BLOCK + BLOCK * C + C
    waves = math.ceil(len(strips) / cores)
    return 4 * (halo_rows * W * C + H * W * C + waves * blocks * per_block)


@pytest.mark.parametrize("target_name", sorted(TARGETS))
def test_inverted_residual_block_as_one_nest(target_name):
    memory, cores = TARGETS[target_name]
    target = load_target(target_name)
    module = parse_module(BLOCK_IR.format(memory=memory, cores=cores), "block.tile.mlir", Registry.default().context())
    rng = np.random.default_rng(7)
    params = weights(rng)
    attach(module, WeightStore(params))
    program = lower_module(module, WeightStore(params), target, cores=cores)
    x = rng.standard_normal((1, C, H, W)).astype(np.float32)
    (symbol,) = program.symbols_of("input")
    result = Interpreter(program).run({symbol.name: x})
    expected = reference(x, params)
    scale = np.abs(expected).max()
    (output,) = result.outputs.values()
    assert np.abs(output - expected).max() <= 1e-5 * scale
    # the intermediates never leave the chip: the output is all that is written to DRAM
    assert result.write_bytes["DRAM"] == 4 * C * H * W
    assert result.read_bytes["DRAM"] == dram_read_bytes(cores)
    # and the cost model's prediction of the group is the simulation's
    (layer,) = result.layers
    prediction = program.predictions[0]
    assert prediction["predicted_cycles"] == layer.cycles
    assert prediction["predicted_dram_read_bytes"] == result.read_bytes["DRAM"]
