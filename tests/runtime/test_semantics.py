"""What each instruction computes, against numpy. Data goes DRAM -> AM -> unit -> AM -> DRAM."""

import math

import numpy as np
import pytest

from nncc.runtime import isa
from nncc.runtime.interpreter import run

RNG = np.random.default_rng(7)
SLOT = 0x4000  # bytes per tensor, in DRAM and in AM


def on_chip(build, compute, inputs, outputs, target="vector"):
    """Load `inputs` (name -> array) into AM slots 0, 1, ...; run `compute(slot_addr)`; read `outputs`.

    Every tensor i lives at DRAM[i*SLOT] and AM[i*SLOT]; outputs get the slots after the inputs.
    """
    names = list(inputs) + list(outputs)
    code = []
    for i, name in enumerate(inputs):
        n = inputs[name].size
        code.append(isa.make("dma", src=("DRAM", i * SLOT), src_stride=(0, 0, 1), dst=("AM", i * SLOT),
                             dst_stride=(0, 0, 1), shape=(1, 1, n)))  # fmt: skip
    code.append(isa.make("barrier"))
    code += compute({name: i * SLOT for i, name in enumerate(names)})
    code.append(isa.make("barrier"))
    for name, shape in outputs.items():
        i = names.index(name)
        n = int(np.prod(shape))
        code.append(isa.make("dma", src=("AM", i * SLOT), src_stride=(0, 0, 1), dst=("DRAM", i * SLOT),
                             dst_stride=(0, 0, 1), shape=(1, 1, n)))  # fmt: skip
    symbols = [(n, "input", i * SLOT, a.shape) for i, (n, a) in enumerate(inputs.items())]
    symbols += [(n, "output", names.index(n) * SLOT, s) for n, s in outputs.items()]
    program = build(target, code, symbols, dram_bytes=len(names) * SLOT)
    return run(program, inputs).outputs


def test_batched_strided_matmul_with_accumulate(build):
    a = RNG.standard_normal((3, 5, 7), dtype=np.float32)
    b = RNG.standard_normal((7, 9), dtype=np.float32)
    c0 = RNG.standard_normal((3, 5, 9), dtype=np.float32)
    bt = np.ascontiguousarray(b.T)  # stored transposed: b[l, j] at l + 7*j

    def compute(at):
        return [
            isa.make("vact", func="copy", shape=(3, 5, 9), x=("AM", at["c0"]), x_stride=(45, 9, 1),
                     z=("AM", at["c"]), z_stride=(45, 9, 1)),
            isa.make("barrier"),
            isa.make("matmul", batch=3, mnk=(5, 9, 7), a=("AM", at["a"]), a_stride=(35, 7, 1),
                     b=("AM", at["bt"]), b_stride=(0, 1, 7), c=("AM", at["c"]), c_stride=(45, 9, 1), acc=1),
        ]  # fmt: skip

    out = on_chip(build, compute, {"a": a, "bt": bt, "c0": c0}, {"c": (3, 5, 9)})
    np.testing.assert_allclose(out["c"], c0 + a @ b, rtol=1e-5, atol=1e-5)


@pytest.mark.parametrize("acc", [0, 1])
def test_matmul_epilogue_adds_bias_once_then_activates(build, acc):
    # c = clip((acc ? c0 : 0) + bias[j] + a @ b, -0.5, 0.5), bias broadcast over the batch and rows
    a = RNG.standard_normal((2, 5, 7), dtype=np.float32)
    b = RNG.standard_normal((7, 20), dtype=np.float32)
    c0 = RNG.standard_normal((2, 5, 20), dtype=np.float32)
    bias = RNG.standard_normal(20, dtype=np.float32)

    def compute(at):
        return [
            isa.make("vact", func="copy", shape=(2, 5, 20), x=("AM", at["c0"]), x_stride=(100, 20, 1),
                     z=("AM", at["c"]), z_stride=(100, 20, 1)),
            isa.make("barrier"),
            isa.make("matmul", batch=2, mnk=(5, 20, 7), a=("AM", at["a"]), a_stride=(35, 7, 1),
                     b=("AM", at["b"]), b_stride=(0, 20, 1), c=("AM", at["c"]), c_stride=(100, 20, 1), acc=acc,
                     bias=("AM", at["bias"]), bias_stride=(0, 0, 1), act="clip", p0=-0.5, p1=0.5),
        ]  # fmt: skip

    out = on_chip(build, compute, {"a": a, "b": b, "c0": c0, "bias": bias}, {"c": (2, 5, 20)})
    expected = np.clip((c0 if acc else 0) + bias + a @ b, -0.5, 0.5)
    np.testing.assert_allclose(out["c"], expected, rtol=1e-5, atol=1e-5)


@pytest.mark.parametrize("mnemonic", list(isa.BINARY_OPS))
def test_binary_ops_with_broadcast(build, mnemonic):
    x = RNG.standard_normal((4, 16), dtype=np.float32)
    y = RNG.standard_normal(16, dtype=np.float32)
    y[3] = x[0, 3]  # an equal pair for vcmpeq

    def compute(at):
        return [
            isa.make(mnemonic, shape=(1, 4, 16), x=("AM", at["x"]), x_stride=(0, 16, 1), y=("AM", at["y"]),
                     y_stride=(0, 0, 1), z=("AM", at["z"]), z_stride=(0, 16, 1))
        ]  # fmt: skip

    want = {
        "vadd": x + y, "vsub": x - y, "vmul": x * y, "vdiv": x / y, "vmax": np.maximum(x, y),
        "vmin": np.minimum(x, y), "vcmpeq": (x == y).astype(np.float32), "vcmpgt": (x > y).astype(np.float32),
    }[mnemonic]  # fmt: skip
    out = on_chip(build, compute, {"x": x, "y": y}, {"z": (4, 16)})
    np.testing.assert_allclose(out["z"], want, rtol=1e-6)


def test_vfma_is_per_channel_scale_shift(build):
    x = RNG.standard_normal((6, 32), dtype=np.float32)
    scale, shift = RNG.standard_normal((2, 32), dtype=np.float32)

    def compute(at):
        return [
            isa.make("vfma", shape=(1, 6, 32), x=("AM", at["x"]), x_stride=(0, 32, 1), y=("AM", at["s"]),
                     y_stride=(0, 0, 1), w=("AM", at["t"]), w_stride=(0, 0, 1), z=("AM", at["z"]), z_stride=(0, 32, 1))
        ]  # fmt: skip

    out = on_chip(build, compute, {"x": x, "s": scale, "t": shift}, {"z": (6, 32)})
    np.testing.assert_allclose(out["z"], x * scale + shift, rtol=1e-6)


ACTIVATIONS = {
    "copy": (0, 0, lambda x: x),
    "relu": (0, 0, lambda x: np.maximum(x, 0)),
    "clip": (-0.5, 0.5, lambda x: np.clip(x, -0.5, 0.5)),
    "leaky": (0.1, 0, lambda x: np.where(x > 0, x, 0.1 * x)),
    "step": (0, 0, lambda x: (x > 0).astype(np.float32)),
    "affine": (2.0, -1.0, lambda x: 2 * x - 1),
    "abs": (0, 0, np.abs),
    "neg": (0, 0, np.negative),
    "square": (0, 0, np.square),
    "hardsigmoid": (0.2, 0.5, lambda x: np.clip(0.2 * x + 0.5, 0, 1)),
    "hardswish": (0, 0, lambda x: x * np.clip(x / 6 + 0.5, 0, 1)),
    "sigmoid": (0, 0, lambda x: 1 / (1 + np.exp(-x))),
    "tanh": (0, 0, np.tanh),
    "exp": (0, 0, np.exp),
    "log": (0, 0, lambda x: np.log(np.abs(x) + 1)),
    "recip": (0, 0, lambda x: 1 / x),
    "sqrt": (0, 0, lambda x: np.sqrt(np.abs(x))),
    "rsqrt": (1e-5, 0, lambda x: 1 / np.sqrt(np.abs(x) + 1e-5)),
    "erf": (0, 0, lambda x: np.vectorize(math.erf)(x.astype(np.float64))),
    "gelu": (0, 0, lambda x: x * 0.5 * (1 + np.vectorize(math.erf)(x.astype(np.float64) / math.sqrt(2)))),
    "gelu_tanh": (0, 0, lambda x: 0.5 * x * (1 + np.tanh(math.sqrt(2 / math.pi) * (x + 0.044715 * x.astype(np.float64)**3)))),
    "silu": (0, 0, lambda x: x / (1 + np.exp(-x.astype(np.float64)))),
}


@pytest.mark.parametrize("func", list(isa.ACTIVATIONS))
def test_activations(build, func):
    p0, p1, reference = ACTIVATIONS[func]
    x = RNG.standard_normal((3, 20), dtype=np.float32) * 4
    if func in ("log", "sqrt", "rsqrt"):
        x = np.abs(x) + (1 if func == "log" else 0)
        reference_input = x - 1 if func == "log" else x
    else:
        reference_input = x

    def compute(at):
        return [
            isa.make("vact", func=func, p0=p0, p1=p1, shape=(1, 3, 20), x=("AM", at["x"]), x_stride=(0, 20, 1),
                     z=("AM", at["z"]), z_stride=(0, 20, 1))
        ]  # fmt: skip

    out = on_chip(build, compute, {"x": x}, {"z": (3, 20)})
    np.testing.assert_allclose(out["z"], reference(reference_input), rtol=1e-5, atol=1e-6)


@pytest.mark.parametrize("func", ["sum", "max", "mean"])
def test_reductions_accumulate(build, func):
    x = RNG.standard_normal((4, 3, 5), dtype=np.float32)
    z0 = RNG.standard_normal(4, dtype=np.float32)

    def compute(at):
        return [
            isa.make("vact", func="copy", shape=(1, 1, 4), x=("AM", at["z0"]), x_stride=(0, 0, 1), z=("AM", at["z"]),
                     z_stride=(0, 0, 1)),
            isa.make("barrier"),
            isa.make("vred", func=func, acc=1, shape=(4, 3, 5), x=("AM", at["x"]), x_stride=(15, 5, 1),
                     z=("AM", at["z"]), z_stride=1),
        ]  # fmt: skip

    reduced = {"sum": x.sum(axis=(1, 2)), "max": x.max(axis=(1, 2)), "mean": x.mean(axis=(1, 2))}[func]
    want = np.maximum(z0, reduced) if func == "max" else z0 + reduced
    out = on_chip(build, compute, {"x": x, "z0": z0}, {"z": (4,)})
    np.testing.assert_allclose(out["z"], want, rtol=1e-5, atol=1e-6)


def test_average_pool_chw(build):
    x = RNG.standard_normal((2, 6, 6), dtype=np.float32)  # CHW

    def compute(at):
        return [
            isa.make("vpool", func="avg", shape=(2, 3, 3), window=(2, 2), x=("AM", at["x"]), x_stride=(36, 12, 2),
                     win_stride=(6, 1), z=("AM", at["z"]), z_stride=(9, 3, 1)),
        ]  # fmt: skip

    out = on_chip(build, compute, {"x": x}, {"z": (2, 3, 3)})
    np.testing.assert_allclose(out["z"], x.reshape(2, 3, 2, 3, 2).mean(axis=(2, 4)), rtol=1e-6)


def test_dma_3d_box_with_padding_and_halo(build):
    """A conv input tile: rows 2..5 of a (3, 8, 8) CHW tensor plus a one-pixel halo, zero padded."""
    x = RNG.standard_normal((3, 8, 8), dtype=np.float32)
    code = [
        # rows 1..6 exist for the halo; left/right columns are padding
        isa.make("dma", src=("DRAM", 4 * 8), src_stride=(64, 8, 1), dst=("AM", 0), dst_stride=(60, 10, 1),
                 shape=(3, 6, 10), pad=(0, 0, 0, 0, 1, 1)),
        isa.make("barrier"),
        isa.make("dma", src=("AM", 0), src_stride=(0, 0, 1), dst=("DRAM", 0x1000), dst_stride=(0, 0, 1),
                 shape=(1, 1, 180)),
    ]  # fmt: skip
    program = build("vector", code, [("x", "input", 0, (3, 8, 8)), ("y", "output", 0x1000, (3, 6, 10))])
    out = run(program, {"x": x}).outputs["y"]
    np.testing.assert_array_equal(out, np.pad(x[:, 1:7, :], ((0, 0), (0, 0), (1, 1))))


def test_vfill(build):
    out = on_chip(
        build,
        lambda at: [isa.make("vfill", shape=(2, 2, 3), z=("AM", at["z"]), z_stride=(6, 3, 1), value=-1.5)],
        {},
        {"z": (12,)},
    )
    np.testing.assert_array_equal(out["z"], np.full(12, -1.5, dtype=np.float32))
