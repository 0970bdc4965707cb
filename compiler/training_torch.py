"""PyTorch autograd as the independent check of `nncc --train --check` (docs/training.md).

The model is rebuilt in PyTorch op by op from the inference `nn` IR as imported from the ONNX
file (each `nn` op is an ONNX node, `torch.nn.functional` gives its forward; autograd, not nncc,
gives every gradient) and trained with `torch.optim.SGD` for the same steps on the same batch:

    reference = torch_training(module, store, inputs, target, settings)
    reference.losses, reference.grads["conv1.weight"], reference.updated["conv1.weight"]

BatchNorm runs in training mode (batch statistics; running statistics updated with PyTorch's
momentum = 1 - ONNX momentum). Needs torch (the `test` extra): a one-line error without it.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field

import numpy as np

from nncc.dialects import nn
from nncc.support.errors import NnccError


@dataclass
class TorchTraining:
    losses: list[float]
    grads: dict[str, np.ndarray] = field(default_factory=dict)  # weight name -> gradient of the last step
    updated: dict[str, np.ndarray] = field(default_factory=dict)  # weight or running statistic -> after K steps


def import_torch():
    try:
        import torch
    except ImportError:
        raise NnccError("--train --check needs PyTorch (CPU): pip install torch, or the 'test' extra") from None
    return torch


def torch_training(module, store, inputs: dict[str, np.ndarray], target: np.ndarray, settings: dict,
                   trainable: list[str], running: list[str], dtype: str = "float32") -> TorchTraining:
    """K SGD steps of the inference @main of `module` in PyTorch. `settings` are the autodiff
    pass's options; `trainable` and `running` name the weights it trains and the running
    statistics it updates. `dtype` float64 gives the exact answer, to tell how well float32
    (PyTorch's or nncc's) does on an ill-conditioned model."""
    torch = import_torch()
    array = Arrays(store, np.dtype(dtype))
    from nncc.compiler.modules import main_function
    from nncc.compiler.nn_interpreter import input_signature

    torch.manual_seed(0)
    main = main_function(module)
    params = {name: torch.tensor(array[name], requires_grad=True) for name in trainable}
    buffers = {name: torch.tensor(array[name]) for name in running}
    optimizer = torch.optim.SGD(list(params.values()), lr=settings.get("lr", 0.01),
                                momentum=settings.get("momentum", 0.0),
                                weight_decay=settings.get("weight_decay", 0.0))
    feeds = [torch.tensor(inputs[name].astype(array.dtype)) for name in input_signature(module)]
    goal = torch.tensor(target.astype(array.dtype))
    losses, grads = [], {}
    for step in range(settings.get("steps", 1)):
        optimizer.zero_grad()
        prediction = Forward(torch, array, params, buffers, settings, step).run(main, feeds)
        loss = loss_of(torch, prediction, goal, settings.get("loss", "cross-entropy"))
        loss.backward()
        losses.append(float(loss.detach()))
        grads = {name: p.grad.detach().numpy().copy() for name, p in params.items() if p.grad is not None}
        optimizer.step()
    updated = {name: p.detach().numpy().copy() for name, p in params.items()}
    updated.update({name: b.numpy().copy() for name, b in buffers.items()})
    return TorchTraining(losses, grads, updated)


class Arrays:
    """The weight store's arrays as fresh arrays of one dtype."""

    def __init__(self, store, dtype: np.dtype):
        self.store, self.dtype = store, dtype

    def __getitem__(self, name: str) -> np.ndarray:
        return np.array(self.store[name], dtype=self.dtype)


def loss_of(torch, prediction, target, loss: str):
    if loss == "mse":
        return torch.nn.functional.mse_loss(prediction, target)
    return -(target * torch.log_softmax(prediction, dim=1)).sum() / prediction.shape[0]


class Forward:
    """One forward pass of @main in PyTorch; a trailing Softmax is left out with cross-entropy
    (the loss takes the logits, as the autodiff pass folds it)."""

    def __init__(self, torch, store, params: dict, buffers: dict, settings: dict, step: int = 0):
        self.torch, self.F = torch, torch.nn.functional
        self.store, self.params, self.buffers, self.settings = store, params, buffers, settings
        self.step = step

    def run(self, main, feeds: list):
        from xdsl.dialects import func

        values = dict(zip(main.body.block.args, feeds))
        returned = main.body.block.last_op
        assert isinstance(returned, func.ReturnOp)
        output = returned.operands[0]
        if (self.settings.get("loss", "cross-entropy") == "cross-entropy" and isinstance(output.owner, nn.SoftmaxOp)
                and len(nn.shape_of(output)) == 2 and output.owner.axis.value.data == 1):
            output = output.owner.input
        for op in main.body.block.ops:
            if isinstance(op, func.ReturnOp):
                break
            values[op.results[0]] = self.op(op, [values[v] for v in op.operands])
            if op.results[0] is output:
                break
        return values[output]

    def weight(self, ref: str):
        if ref in self.params:
            return self.params[ref]
        if ref in self.buffers:
            return self.buffers[ref]
        return self.torch.tensor(self.store[ref])

    def op(self, op, args: list):
        torch, F = self.torch, self.F
        if isinstance(op, nn.WeightOp):
            return self.weight(op.ref.data)
        simple = {nn.ReluOp: F.relu, nn.SigmoidOp: torch.sigmoid, nn.HardSwishOp: F.hardswish,
                  nn.TanhOp: torch.tanh, nn.ErfOp: torch.erf, nn.SqrtOp: torch.sqrt, nn.SiluOp: F.silu,
                  nn.GeluOp: F.gelu, nn.AddOp: torch.add, nn.SubOp: torch.sub, nn.MulOp: torch.mul,
                  nn.DivOp: torch.div, nn.MatMulOp: torch.matmul, nn.ExpOp: torch.exp, nn.LogOp: torch.log,
                  nn.GeluTanhOp: lambda x: F.gelu(x, approximate="tanh")}
        if type(op) in simple:
            return simple[type(op)](*args)
        method = getattr(self, f"op_{type(op).__name__}", None)
        if method is None:
            raise NnccError(f"--check: {op.name} has no PyTorch counterpart in the training check")
        return method(op, *args)

    def pad(self, x, pads, value=0.0):
        top, left, bottom, right = pads
        return self.F.pad(x, (left, right, top, bottom), value=value) if any(pads) else x

    def op_Conv2dOp(self, op, x, w, b=None):
        return self.F.conv2d(self.pad(x, nn.ints(op.pads)), w, b, stride=nn.ints(op.strides),
                             dilation=nn.ints(op.dilations), groups=op.group.value.data)

    def op_GemmOp(self, op, a, b, c=None):
        a = a.t() if op.trans_a.value else a
        b = b.t() if op.trans_b.value else b
        y = (a @ b) * op.alpha.value.data
        return y if c is None else y + c * op.beta.value.data

    def op_BatchNormOp(self, op, x, scale, bias, mean, var):
        return self.F.batch_norm(x, mean, var, scale, bias, training=True,
                                 momentum=1.0 - self.settings.get("bn_momentum", 0.9), eps=op.epsilon.value.data)

    def op_LeakyReluOp(self, op, x):
        return self.F.leaky_relu(x, op.alpha.value.data)

    def op_ClipOp(self, op, x):
        low, high = op.min.value.data, op.max.value.data
        return self.torch.clamp(x, None if math.isinf(low) else low, None if math.isinf(high) else high)

    def op_HardSigmoidOp(self, op, x):
        return self.torch.clamp(x * op.alpha.value.data + op.beta.value.data, 0.0, 1.0)

    def op_ScaleOp(self, op, x):
        return x * op.factor.value.data

    def op_MaxPool2dOp(self, op, x):
        pads = nn.ints(op.pads)
        symmetric = pads[0] == pads[2] and pads[1] == pads[3] and 2 * max(pads) <= min(nn.ints(op.kernel))
        if not symmetric:
            x, pads = self.pad(x, pads, -math.inf), (0, 0, 0, 0)
        y = self.F.max_pool2d(x, nn.ints(op.kernel), nn.ints(op.strides), (pads[0], pads[1]),
                              nn.ints(op.dilations), ceil_mode=bool(op.ceil_mode.value))
        return self.crop(y, op)

    def crop(self, y, op):
        """Padded by hand, PyTorch's ceil mode may keep a window that starts in the end padding;
        ONNX drops it (the result type has the ONNX size)."""
        oh, ow = nn.shape_of(op.result)[2:]
        return y[:, :, :oh, :ow]

    def op_AvgPool2dOp(self, op, x):
        if nn.ints(op.dilations) != (1, 1):
            raise NnccError("--check: PyTorch has no dilated average pooling")
        pads, kernel = nn.ints(op.pads), nn.ints(op.kernel)
        args = (kernel, nn.ints(op.strides))
        if pads[0] == pads[2] and pads[1] == pads[3] and 2 * max(pads) <= min(kernel):
            return self.F.avg_pool2d(x, *args, (pads[0], pads[1]), ceil_mode=bool(op.ceil_mode.value),
                                     count_include_pad=bool(op.count_include_pad.value))
        ones = self.torch.ones_like(x[:1, :1])
        total = self.F.avg_pool2d(self.pad(x, pads), *args, ceil_mode=bool(op.ceil_mode.value), divisor_override=1)
        mask = self.pad(ones, pads, 1.0 if bool(op.count_include_pad.value) else 0.0)
        return self.crop(total / self.F.avg_pool2d(mask, *args, ceil_mode=bool(op.ceil_mode.value),
                                                   divisor_override=1), op)

    def op_GlobalAvgPoolOp(self, op, x):
        return x.mean(dim=tuple(range(2, x.dim())), keepdim=True)

    def op_GlobalMaxPoolOp(self, op, x):
        return x.amax(dim=tuple(range(2, x.dim())), keepdim=True)

    def op_ReshapeOp(self, op, x):
        return x.reshape(nn.shape_of(op.result))

    def op_TransposeOp(self, op, x):
        return x.permute(*nn.ints(op.perm))

    def op_ConcatOp(self, op, *xs):
        return self.torch.cat(xs, dim=op.axis.value.data)

    def op_SoftmaxOp(self, op, x):
        return self.torch.softmax(x, dim=op.axis.value.data)

    def op_DropoutOp(self, op, x):
        """Training's dropout with the mask the autodiff pass draws for this step (PyTorch's own
        generator would draw another)."""
        from nncc.compiler.nn_kernels import dropout_mask

        ratio = op.ratio.value.data
        if self.settings.get("dropout", "seeded") == "identity" or ratio == 0.0:
            return x
        mask = dropout_mask(self.settings.get("dropout_seed", 0), op.result.name_hint or "", self.step,
                            tuple(x.shape), ratio)
        return x * self.torch.tensor(mask, dtype=x.dtype)

    def op_LRNOp(self, op, x):
        """ONNX's window (PyTorch's local_response_norm centres an even window the other way)."""
        from nncc.compiler.nn_kernels import lrn_window

        size = op.size.value.data
        band = self.torch.tensor(lrn_window(x.shape[1], size), dtype=x.dtype)
        sums = self.torch.einsum("ci,nihw->nchw", band, x * x)
        return x / (op.bias.value.data + op.alpha.value.data / size * sums) ** op.beta.value.data

    def op_SliceOp(self, op, x):
        index = [self.torch.arange(size) * step + start for start, step, size
                 in zip(nn.ints(op.starts), nn.ints(op.steps), nn.shape_of(op.result))]
        for axis, positions in enumerate(index):
            x = x.index_select(axis, positions)
        return x
