"""Reference execution of the `nn` dialect with numpy (xDSL interpreter functions).

One `@impl` per op, each calling the kernel in `nn_kernels`; `nn.weight` reads
the weight store. `run_reference` executes `@main` and returns the outputs with
a per-op profile (ONNX nodes, MACs), which the report turns into layer rows:

    outputs, layers = run_reference(module, {"input": x})
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

import numpy as np
from xdsl.dialects import func
from xdsl.dialects.builtin import ModuleOp
from xdsl.interpreter import Interpreter, InterpreterFunctions, impl, register_impls
from xdsl.interpreters.func import FuncFunctions
from xdsl.ir import Operation

from nncc.compiler import nn_kernels as k
from nncc.compiler.modules import main_function, names_attr
from nncc.compiler.weights import WeightStore, store_of
from nncc.dialects import nn
from nncc.support.errors import NnccError

Args = tuple[Any, ...]


def ints(attr) -> tuple[int, ...]:
    return nn.ints(attr)


def flt(attr) -> float:
    return float(attr.value.data)


UNARY_KERNELS = {
    nn.ReluOp: k.relu,
    nn.SigmoidOp: k.sigmoid,
    nn.SqrtOp: k.sqrt,
    nn.HardSwishOp: k.hard_swish,
    nn.TanhOp: k.tanh,
    nn.ErfOp: k.erf,
    nn.GeluOp: k.gelu,
    nn.GeluTanhOp: k.gelu_tanh,
    nn.SiluOp: k.silu,
    nn.StepOp: k.step,
    nn.LogOp: k.log,
    nn.ExpOp: k.exp,
}
"""Ops without attributes whose reference is one elementwise kernel of `nn_kernels`."""


def unary_impl(op_type: type[Operation], kernel):
    @impl(op_type)
    def run(self, interpreter: Interpreter, op: Operation, args: Args):
        return (kernel(args[0]),)

    return run


UnaryFunctions = type("UnaryFunctions", (InterpreterFunctions,),
                      {f"run_{op_type.name}": unary_impl(op_type, kernel) for op_type, kernel in UNARY_KERNELS.items()})
"""One `@impl` per entry of `UNARY_KERNELS`; `NNFunctions` inherits them (`register_impls` walks the MRO)."""


@register_impls
class NNFunctions(UnaryFunctions):
    """Interpreter functions of the `nn` dialect; values are float32 numpy arrays."""

    def __init__(self, store: WeightStore):
        self.store = store

    @impl(nn.WeightOp)
    def run_weight(self, interpreter: Interpreter, op: nn.WeightOp, args: Args):
        array = self.store[op.ref.data]
        if tuple(array.shape) != nn.shape_of(op.result):
            raise NnccError(f"weight '{op.ref.data}' has shape {list(array.shape)} in the store, "
                            f"but the IR declares {list(nn.shape_of(op.result))}")
        return (array.astype(np.float32, copy=False),)

    @impl(nn.Conv2dOp)
    def run_conv2d(self, interpreter: Interpreter, op: nn.Conv2dOp, args: Args):
        bias = args[2] if len(args) > 2 else None
        return (k.conv2d(args[0], args[1], bias, ints(op.strides), ints(op.pads),
                         ints(op.dilations), op.group.value.data),)

    @impl(nn.GemmOp)
    def run_gemm(self, interpreter: Interpreter, op: nn.GemmOp, args: Args):
        c = args[2] if len(args) > 2 else None
        return (k.gemm(args[0], args[1], c, op.trans_a.value, op.trans_b.value,
                       flt(op.alpha), flt(op.beta)),)

    @impl(nn.MatMulOp)
    def run_matmul(self, interpreter: Interpreter, op: nn.MatMulOp, args: Args):
        return (np.matmul(args[0], args[1]).astype(np.float32),)

    @impl(nn.BatchNormOp)
    def run_batch_norm(self, interpreter: Interpreter, op: nn.BatchNormOp, args: Args):
        return (k.batch_norm(*args, flt(op.epsilon)),)

    @impl(nn.DropoutOp)
    def run_dropout(self, interpreter: Interpreter, op: nn.DropoutOp, args: Args):
        return (args[0],)  # inference: the identity (autodiff makes training's mask a multiplication)

    @impl(nn.LRNOp)
    def run_lrn(self, interpreter: Interpreter, op: nn.LRNOp, args: Args):
        return (k.lrn(args[0], op.size.value.data, flt(op.alpha), flt(op.beta), flt(op.bias)),)

    @impl(nn.LeakyReluOp)
    def run_leaky_relu(self, interpreter: Interpreter, op: nn.LeakyReluOp, args: Args):
        return (k.leaky_relu(args[0], flt(op.alpha)),)

    @impl(nn.ClipOp)
    def run_clip(self, interpreter: Interpreter, op: nn.ClipOp, args: Args):
        return (k.clip(args[0], flt(op.min), flt(op.max)),)

    @impl(nn.HardSigmoidOp)
    def run_hard_sigmoid(self, interpreter: Interpreter, op: nn.HardSigmoidOp, args: Args):
        return (k.hard_sigmoid(args[0], flt(op.alpha), flt(op.beta)),)

    def run_binary(self, op: nn.BinaryOp, args: Args):
        kernel = k.BINARY[op.name.removeprefix("nn.")]
        with np.errstate(divide="ignore", invalid="ignore"):
            return (kernel(args[0], args[1]).astype(np.float32),)

    @impl(nn.AddOp)
    def run_add(self, interpreter: Interpreter, op: nn.AddOp, args: Args):
        return self.run_binary(op, args)

    @impl(nn.SubOp)
    def run_sub(self, interpreter: Interpreter, op: nn.SubOp, args: Args):
        return self.run_binary(op, args)

    @impl(nn.MulOp)
    def run_mul(self, interpreter: Interpreter, op: nn.MulOp, args: Args):
        return self.run_binary(op, args)

    @impl(nn.DivOp)
    def run_div(self, interpreter: Interpreter, op: nn.DivOp, args: Args):
        return self.run_binary(op, args)

    @impl(nn.MaxPool2dOp)
    def run_max_pool(self, interpreter: Interpreter, op: nn.MaxPool2dOp, args: Args):
        return (k.max_pool(args[0], ints(op.kernel), ints(op.strides), ints(op.pads),
                           ints(op.dilations), op.ceil_mode.value),)

    @impl(nn.AvgPool2dOp)
    def run_avg_pool(self, interpreter: Interpreter, op: nn.AvgPool2dOp, args: Args):
        return (k.avg_pool(args[0], ints(op.kernel), ints(op.strides), ints(op.pads),
                           ints(op.dilations), op.ceil_mode.value, op.count_include_pad.value),)

    @impl(nn.GlobalAvgPoolOp)
    def run_global_avg_pool(self, interpreter: Interpreter, op: nn.GlobalAvgPoolOp, args: Args):
        return (k.global_avg_pool(args[0]),)

    @impl(nn.GlobalMaxPoolOp)
    def run_global_max_pool(self, interpreter: Interpreter, op: nn.GlobalMaxPoolOp, args: Args):
        return (k.global_max_pool(args[0]),)

    @impl(nn.ReshapeOp)
    def run_reshape(self, interpreter: Interpreter, op: nn.ReshapeOp, args: Args):
        return (args[0].reshape(nn.shape_of(op.result)),)

    @impl(nn.TransposeOp)
    def run_transpose(self, interpreter: Interpreter, op: nn.TransposeOp, args: Args):
        return (np.ascontiguousarray(args[0].transpose(ints(op.perm))),)

    @impl(nn.ConcatOp)
    def run_concat(self, interpreter: Interpreter, op: nn.ConcatOp, args: Args):
        return (np.concatenate(args, axis=op.axis.value.data),)

    @impl(nn.SliceOp)
    def run_slice(self, interpreter: Interpreter, op: nn.SliceOp, args: Args):
        return (k.strided_box(args[0], ints(op.starts), ints(op.steps), nn.shape_of(op.result)),)

    @impl(nn.SoftmaxOp)
    def run_softmax(self, interpreter: Interpreter, op: nn.SoftmaxOp, args: Args):
        return (k.softmax(args[0], op.axis.value.data),)

    # ----------------------------------------------------------------- training (autodiff's ops)

    @impl(nn.Conv2dBackwardDataOp)
    def run_conv2d_backward_data(self, interpreter: Interpreter, op: nn.Conv2dBackwardDataOp, args: Args):
        return (k.conv2d_backward_data(args[0], args[1], nn.shape_of(op.result), *op.conv_properties()),)

    @impl(nn.Conv2dBackwardFilterOp)
    def run_conv2d_backward_filter(self, interpreter: Interpreter, op: nn.Conv2dBackwardFilterOp, args: Args):
        return (k.conv2d_backward_filter(args[0], args[1], nn.shape_of(op.result), *op.conv_properties()),)

    @impl(nn.ReduceSumOp)
    def run_reduce_sum(self, interpreter: Interpreter, op: nn.ReduceSumOp, args: Args):
        return (k.reduce_sum(args[0], ints(op.axes)),)

    @impl(nn.ScaleOp)
    def run_scale(self, interpreter: Interpreter, op: nn.ScaleOp, args: Args):
        return (k.scale(args[0], flt(op.factor)),)

    @impl(nn.BatchNormTrainOp)
    def run_batch_norm_train(self, interpreter: Interpreter, op: nn.BatchNormTrainOp, args: Args):
        return k.batch_norm_train(*args, flt(op.epsilon), flt(op.momentum))

    @impl(nn.BatchNormBackwardOp)
    def run_batch_norm_backward(self, interpreter: Interpreter, op: nn.BatchNormBackwardOp, args: Args):
        return k.batch_norm_backward(*args)

    @impl(nn.ReluBackwardOp)
    def run_relu_backward(self, interpreter: Interpreter, op: nn.ReluBackwardOp, args: Args):
        return (k.relu_backward(*args),)

    @impl(nn.SigmoidBackwardOp)
    def run_sigmoid_backward(self, interpreter: Interpreter, op: nn.SigmoidBackwardOp, args: Args):
        return (k.sigmoid_backward(*args),)

    @impl(nn.HardSwishBackwardOp)
    def run_hard_swish_backward(self, interpreter: Interpreter, op: nn.HardSwishBackwardOp, args: Args):
        return (k.hard_swish_backward(*args),)

    @impl(nn.TanhBackwardOp)
    def run_tanh_backward(self, interpreter: Interpreter, op: nn.TanhBackwardOp, args: Args):
        return (k.tanh_backward(*args),)

    @impl(nn.SiluBackwardOp)
    def run_silu_backward(self, interpreter: Interpreter, op: nn.SiluBackwardOp, args: Args):
        return (k.silu_backward(*args),)

    @impl(nn.GeluBackwardOp)
    def run_gelu_backward(self, interpreter: Interpreter, op: nn.GeluBackwardOp, args: Args):
        return (k.gelu_backward(*args),)

    @impl(nn.LeakyReluBackwardOp)
    def run_leaky_relu_backward(self, interpreter: Interpreter, op: nn.LeakyReluBackwardOp, args: Args):
        return (k.leaky_relu_backward(*args, flt(op.alpha)),)

    @impl(nn.ClipBackwardOp)
    def run_clip_backward(self, interpreter: Interpreter, op: nn.ClipBackwardOp, args: Args):
        return (k.clip_backward(*args, flt(op.min), flt(op.max)),)

    @impl(nn.HardSigmoidBackwardOp)
    def run_hard_sigmoid_backward(self, interpreter: Interpreter, op: nn.HardSigmoidBackwardOp, args: Args):
        return (k.hard_sigmoid_backward(*args, flt(op.alpha), flt(op.beta)),)

    @impl(nn.MaxPool2dBackwardOp)
    def run_max_pool_backward(self, interpreter: Interpreter, op: nn.MaxPool2dBackwardOp, args: Args):
        return (k.max_pool_backward(args[0], args[1], *op.pool_properties()),)

    @impl(nn.AvgPool2dBackwardOp)
    def run_avg_pool_backward(self, interpreter: Interpreter, op: nn.AvgPool2dBackwardOp, args: Args):
        return (k.avg_pool_backward(args[0], nn.shape_of(op.result), *op.pool_properties(),
                                    op.count_include_pad.value),)

    @impl(nn.GlobalAvgPoolBackwardOp)
    def run_global_avg_pool_backward(self, interpreter: Interpreter, op: nn.GlobalAvgPoolBackwardOp, args: Args):
        return (k.global_avg_pool_backward(args[0], nn.shape_of(op.result)),)

    @impl(nn.GlobalMaxPoolBackwardOp)
    def run_global_max_pool_backward(self, interpreter: Interpreter, op: nn.GlobalMaxPoolBackwardOp, args: Args):
        return (k.global_max_pool_backward(*args),)

    @impl(nn.SoftmaxCrossEntropyOp)
    def run_softmax_cross_entropy(self, interpreter: Interpreter, op: nn.SoftmaxCrossEntropyOp, args: Args):
        return (k.softmax_cross_entropy(*args),)

    @impl(nn.SoftmaxCrossEntropyBackwardOp)
    def run_softmax_cross_entropy_backward(self, interpreter: Interpreter, op, args: Args):
        return (k.softmax_cross_entropy_backward(*args),)

    @impl(nn.MseLossOp)
    def run_mse_loss(self, interpreter: Interpreter, op: nn.MseLossOp, args: Args):
        return (k.mse_loss(*args),)

    @impl(nn.MseLossBackwardOp)
    def run_mse_loss_backward(self, interpreter: Interpreter, op: nn.MseLossBackwardOp, args: Args):
        return (k.mse_loss_backward(*args),)

    @impl(nn.SgdOp)
    def run_sgd(self, interpreter: Interpreter, op: nn.SgdOp, args: Args):
        weight, velocity = k.sgd(args[0], args[1], args[2] if len(args) > 2 else None,
                                 flt(op.lr), flt(op.momentum), flt(op.weight_decay))
        return (weight,) if velocity is None else (weight, velocity)


@dataclass
class LayerProfile(Interpreter.Listener):
    """Records every compute op executed: its name, ONNX nodes and MACs."""

    rows: list[dict] = field(default_factory=list)

    def did_interpret_op(self, op: Operation, results) -> None:
        if isinstance(op, (nn.WeightOp, func.ReturnOp)) or not op.results:
            return
        self.rows.append({
            "name": op.results[0].name_hint or op.name,
            "op": op.name,
            "onnx_nodes": nn.onnx_nodes_of(op),
            "phase": nn.phase_of(op),
            "macs": int(getattr(op, "macs", 0)),
        })


def input_signature(module: ModuleOp) -> dict[str, tuple[int, ...]]:
    """Input name -> shape of @main."""
    main = main_function(module)
    args = main.function_type.inputs.data
    names = names_attr(module, "nn.input_names", len(args), "input")
    return {name: tuple(t.get_shape()) for name, t in zip(names, args)}


def output_names(module: ModuleOp) -> list[str]:
    return names_attr(module, "nn.output_names", len(main_function(module).function_type.outputs.data), "output")


def run_reference(module: ModuleOp, inputs: dict[str, np.ndarray],
                  store: WeightStore | None = None) -> tuple[dict[str, np.ndarray], list[dict]]:
    """Execute @main on `inputs` (by name); returns outputs by name and per-op rows."""
    store = store if store is not None else store_of(module, "reference execution")
    profile = LayerProfile()
    interpreter = Interpreter(module, listeners=(profile,))
    interpreter.register_implementations(FuncFunctions())
    interpreter.register_implementations(NNFunctions(store))
    from nncc.compiler.fused_interpreter import FusedFunctions  # the IR after the graph passes

    interpreter.register_implementations(FusedFunctions())
    args = tuple(np.asarray(inputs[name], dtype=np.float32) for name in input_signature(module))
    results = interpreter.call_op("main", args)
    outputs = {name: np.asarray(result) for name, result in zip(output_names(module), results)}
    return outputs, profile.rows
