"""The model zoo: torchvision architectures built as ONNX with `onnx.helper`.

Five image classifiers, layer for layer as torchvision defines them (see docs/zoo.md):
resnet18, resnet50 (v1.5), mobilenet_v2, vgg16 (configuration D, no BN) and squeezenet1_1.
Weights are fixed-seed random, nothing is downloaded. Models are opset 17, IR version 9, with
BatchNorm kept unfolded (bias-free Conv followed by BatchNormalization, as torchvision exports).

Weights are He-normal; each BatchNormalization gets running statistics close to the real
statistics of its input for a standard-normal `input` (the builder propagates per-channel
mean and variance through the graph), perturbed at random. Activations therefore stay O(1)
through the whole depth and the logits are numerically healthy.

    model = build_model("resnet50", batch=1, resolution=224, seed=0)
    count_parameters(model)  # 25_557_032, torchvision's count
    count_macs(model)        # 4_089_184_256
"""

from __future__ import annotations

import math
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field

import numpy as np
import onnx
from onnx import TensorProto, helper

from nncc.support.errors import NnccError

OPSET = 17
IR_VERSION = 9  # onnxruntime 1.31 refuses the IR version onnx 1.23 writes by default
INPUT_NAME = "input"
OUTPUT_NAME = "logits"
NUM_CLASSES = 1000
RESOLUTION_STEP = 32  # every model downsamples by 32
MAX_RESOLUTION = 2048  # the weight statistics of a 2048 x 2048 conv already take 0.5 GiB
MAX_INPUT_ELEMENTS = 2**31 - 1  # the largest tensor nncc imports
MAX_WEIGHT_BYTES = 2**31 - 2**26  # a protobuf message must stay below 2 GiB

# Inputs of a node that are learnable parameters (torchvision's count): weights, biases,
# BN gamma/beta. BN running mean/var are buffers, Clip bounds are constants.
LEARNABLE_INPUTS = {"Conv": (1, 2), "Gemm": (1, 2), "BatchNormalization": (1, 2)}


# --------------------------------------------------------------------------------------
# Activation statistics: per-channel mean and variance, for calibrating BatchNorm.
# --------------------------------------------------------------------------------------

_erf = np.vectorize(math.erf, otypes=[np.float64])


@dataclass
class Stats:
    """Per-channel (or per-feature) mean and variance of a tensor for a N(0,1) input."""

    mean: np.ndarray
    var: np.ndarray


def relu_stats(stats: Stats) -> Stats:
    """Moments of max(x, 0) for x ~ N(mean, var), channel by channel."""
    std = np.sqrt(np.maximum(stats.var, 1e-12))
    a = stats.mean / std
    cdf = 0.5 * (1.0 + _erf(a / math.sqrt(2.0)))
    pdf = np.exp(-0.5 * a * a) / math.sqrt(2.0 * math.pi)
    first = stats.mean * cdf + std * pdf
    second = (stats.mean**2 + stats.var) * cdf + stats.mean * std * pdf
    return Stats(first, np.maximum(second - first**2, 1e-12))


def valid_taps(size: int, kernel: int, stride: int, pad: int) -> np.ndarray:
    """[output position, kernel tap] -> 1.0 where the tap reads a real input, 0.0 on padding."""
    out = (size + 2 * pad - kernel) // stride + 1
    rows = np.arange(out)[:, None] * stride - pad + np.arange(kernel)[None, :]
    return ((rows >= 0) & (rows < size)).astype(np.float64)


def conv_stats(
    stats: Stats, weight: np.ndarray, groups: int, bias: np.ndarray, taps_h: np.ndarray, taps_w: np.ndarray
) -> Stats:
    """Output moments of a conv, inputs independent with per-channel moments.

    Zero padding makes the mean depend on the position: its spread over the positions
    adds to the variance (this matters at small resolutions).
    """
    channels, group_in = weight.shape[:2]
    group_of_output = np.arange(channels) // (channels // groups)
    mean_in = stats.mean.reshape(groups, group_in)[group_of_output]  # [out, in/groups]
    var_in = stats.var.reshape(groups, group_in)[group_of_output]
    coverage = np.outer(taps_h.mean(axis=0), taps_w.mean(axis=0))
    var = ((weight**2 * coverage).sum(axis=(2, 3)) * var_in).sum(axis=1)
    tap_means = np.einsum("oikl,oi->okl", weight, mean_in)  # [out, kh, kw]
    mean_map = np.einsum("pk,okl,ql->opq", taps_h, tap_means, taps_w) + bias[:, None, None]
    return Stats(mean_map.mean(axis=(1, 2)), var + mean_map.var(axis=(1, 2)))


NORMAL_CHUNK = 1 << 22  # elements drawn per thread; fixed, so weights do not depend on threads


def standard_normal(rng: np.random.Generator, shape: tuple[int, ...]) -> np.ndarray:
    """float32 N(0,1) draws; large tensors are drawn in chunks on two threads (VGG's FC1 is 100M)."""
    size = math.prod(shape)
    if size <= NORMAL_CHUNK:
        return rng.standard_normal(shape, dtype=np.float32)
    array = np.empty(size, np.float32)
    chunks = [array[start : start + NORMAL_CHUNK] for start in range(0, size, NORMAL_CHUNK)]
    seeds = np.random.SeedSequence(int(rng.integers(2**63))).spawn(len(chunks))

    def fill(seed: np.random.SeedSequence, chunk: np.ndarray) -> None:
        np.random.default_rng(seed).standard_normal(chunk.shape, dtype=np.float32, out=chunk)

    with ThreadPoolExecutor(max_workers=2) as pool:
        list(pool.map(fill, seeds, chunks))
    return array.reshape(shape)


# --------------------------------------------------------------------------------------
# The graph builder
# --------------------------------------------------------------------------------------


@dataclass
class GraphBuilder:
    """Appends named nodes and initializers, tracking shapes and activation statistics.

    Every method takes the node name and its input tensor and returns the output tensor,
    which is named after the node.
    """

    rng: np.random.Generator
    batch: int
    resolution: int
    nodes: list[onnx.NodeProto] = field(default_factory=list)
    initializers: dict[str, np.ndarray] = field(default_factory=dict)  # float32, filled in at the end
    shapes: dict[str, tuple[int, ...]] = field(default_factory=dict)
    stats: dict[str, Stats] = field(default_factory=dict)
    weight_bytes: int = 0

    def __post_init__(self) -> None:
        self.shapes[INPUT_NAME] = (self.batch, 3, self.resolution, self.resolution)
        self.stats[INPUT_NAME] = Stats(np.zeros(3), np.ones(3))

    # ---- bookkeeping -----------------------------------------------------------------

    def _reserve(self, name: str, shape: tuple[int, ...]) -> None:
        """Refuse a weight that would push the model past the protobuf size limit."""
        self.weight_bytes += 4 * math.prod(shape)
        if self.weight_bytes > MAX_WEIGHT_BYTES:
            raise NnccError(
                f"weight '{name}' {list(shape)} takes the model past 2 GiB of weights; "
                f"use a smaller --resolution"
            )

    def _initializer(self, name: str, array: np.ndarray) -> str:
        self.initializers[name] = np.asarray(array, np.float32)
        return name

    def _normal(self, name: str, shape: tuple[int, ...], std: float) -> np.ndarray:
        self._reserve(name, shape)
        array = standard_normal(self.rng, shape)
        array *= np.float32(std)
        return array

    def _node(self, op: str, name: str, inputs: list[str], shape, stats: Stats, **attrs) -> str:
        self.nodes.append(helper.make_node(op, inputs, [name], name=name, **attrs))
        self.shapes[name] = tuple(shape)
        self.stats[name] = stats
        return name

    # ---- layers ----------------------------------------------------------------------

    def conv(
        self,
        name: str,
        x: str,
        channels: int,
        kernel: int,
        stride: int = 1,
        pad: int = 0,
        groups: int = 1,
        bias: bool = False,
    ) -> str:
        """Conv2d with He-normal weights `name.weight` (and a small `name.bias`)."""
        n, cin, h, w = self.shapes[x]
        if cin % groups or channels % groups:
            raise NnccError(f"{name}: {cin} -> {channels} channels not divisible by {groups} groups")
        shape = (channels, cin // groups, kernel, kernel)
        weight = self._normal(f"{name}.weight", shape, math.sqrt(2.0 / math.prod(shape[1:])))
        inputs = [x, self._initializer(f"{name}.weight", weight)]
        offset = np.zeros(channels)
        if bias:
            offset = self._normal(f"{name}.bias", (channels,), 0.02)
            inputs.append(self._initializer(f"{name}.bias", offset))
        out_h = (h + 2 * pad - kernel) // stride + 1
        out_w = (w + 2 * pad - kernel) // stride + 1
        if out_h < 1 or out_w < 1:
            raise NnccError(f"{name}: input {h}x{w} is too small for a {kernel}x{kernel} kernel")
        taps_h, taps_w = valid_taps(h, kernel, stride, pad), valid_taps(w, kernel, stride, pad)
        stats = conv_stats(self.stats[x], weight.astype(np.float64), groups, offset, taps_h, taps_w)
        attrs = dict(kernel_shape=[kernel, kernel], strides=[stride, stride], pads=[pad] * 4)
        if groups > 1:
            attrs["group"] = groups
        return self._node("Conv", name, inputs, (n, channels, out_h, out_w), stats, **attrs)

    def batch_norm(self, name: str, x: str) -> str:
        """BatchNormalization whose running stats are the input's, randomly perturbed."""
        stats = self.stats[x]
        channels = self.shapes[x][1]
        std = np.sqrt(np.maximum(stats.var, 1e-6))
        gamma = self.rng.uniform(0.6, 1.4, channels)
        beta = self.rng.normal(0.0, 0.1, channels)
        running_mean = stats.mean + 0.1 * std * self.rng.standard_normal(channels)
        running_var = np.maximum(stats.var, 1e-6) * self.rng.uniform(0.8, 1.25, channels)
        for suffix in ("weight", "bias", "running_mean", "running_var"):
            self._reserve(f"{name}.{suffix}", (channels,))
        inputs = [
            x,
            self._initializer(f"{name}.weight", gamma),
            self._initializer(f"{name}.bias", beta),
            self._initializer(f"{name}.running_mean", running_mean),
            self._initializer(f"{name}.running_var", running_var),
        ]
        scale = gamma / np.sqrt(running_var + 1e-5)
        out = Stats(beta + scale * (stats.mean - running_mean), scale**2 * stats.var)
        return self._node("BatchNormalization", name, inputs, self.shapes[x], out, epsilon=1e-5)

    def relu(self, name: str, x: str) -> str:
        return self._node("Relu", name, [x], self.shapes[x], relu_stats(self.stats[x]))

    def relu6(self, name: str, x: str) -> str:
        """ReLU6 as Clip(x, 0, 6) with min and max as (shared) initializer inputs."""
        if "relu6.min" not in self.initializers:
            self._initializer("relu6.min", np.array(0.0))
            self._initializer("relu6.max", np.array(6.0))
        stats = relu_stats(self.stats[x])  # clipping at 6 is rare for O(1) activations
        return self._node("Clip", name, [x, "relu6.min", "relu6.max"], self.shapes[x], stats)

    def max_pool(self, name: str, x: str, kernel: int, stride: int, pad: int = 0, ceil: bool = False) -> str:
        n, c, h, w = self.shapes[x]
        out_h, out_w = (pool_size(s, kernel, stride, pad, ceil) for s in (h, w))
        if out_h < 1 or out_w < 1:
            raise NnccError(f"{name}: input {h}x{w} is too small for a {kernel}x{kernel} pool")
        stats = self.stats[x]
        # Max over a window of correlated values: measured on ReLU outputs, the mean rises by
        # about 1.75 std for 3x3 windows (1 std for 2x2) and the variance stays about the same.
        out = Stats(stats.mean + (1.75 if kernel > 2 else 1.0) * np.sqrt(stats.var), stats.var)
        attrs = dict(kernel_shape=[kernel, kernel], strides=[stride, stride], pads=[pad] * 4)
        if ceil:
            attrs["ceil_mode"] = 1
        return self._node("MaxPool", name, [x], (n, c, out_h, out_w), out, **attrs)

    def average_pool(self, name: str, x: str, kernel: int, stride: int) -> str:
        """AveragePool without padding (DenseNet's transitions)."""
        n, c, h, w = self.shapes[x]
        out_h, out_w = (pool_size(s, kernel, stride, 0, False) for s in (h, w))
        if out_h < 1 or out_w < 1:
            raise NnccError(f"{name}: input {h}x{w} is too small for a {kernel}x{kernel} pool")
        stats = Stats(self.stats[x].mean, self.stats[x].var / (kernel * kernel))
        return self._node("AveragePool", name, [x], (n, c, out_h, out_w), stats,
                          kernel_shape=[kernel, kernel], strides=[stride, stride])

    def global_average_pool(self, name: str, x: str) -> str:
        n, c, h, w = self.shapes[x]
        stats = Stats(self.stats[x].mean, self.stats[x].var / (h * w))
        return self._node("GlobalAveragePool", name, [x], (n, c, 1, 1), stats)

    def flatten(self, name: str, x: str) -> str:
        n, c, h, w = self.shapes[x]
        stats = Stats(np.repeat(self.stats[x].mean, h * w), np.repeat(self.stats[x].var, h * w))
        return self._node("Flatten", name, [x], (n, c * h * w), stats, axis=1)

    def gemm(self, name: str, x: str, features: int, gain: float = 2.0) -> str:
        """Fully connected layer y = x W^T + b (torchvision Linear: weight [out, in], transB=1)."""
        n, fan_in = self.shapes[x]
        weight = self._normal(f"{name}.weight", (features, fan_in), math.sqrt(gain / fan_in))
        bias = self._normal(f"{name}.bias", (features,), 0.02)
        stats = self.stats[x]
        mean_in, var_in = stats.mean.astype(np.float32), stats.var.astype(np.float32)
        out = Stats(weight @ mean_in + bias, np.einsum("ji,ji,i->j", weight, weight, var_in))  # no temporary
        inputs = [x, self._initializer(f"{name}.weight", weight), self._initializer(f"{name}.bias", bias)]
        return self._node("Gemm", name, inputs, (n, features), out, transB=1)

    def add(self, name: str, a: str, b: str) -> str:
        if self.shapes[a] != self.shapes[b]:
            raise NnccError(f"{name}: cannot add {self.shapes[a]} and {self.shapes[b]}")
        sa, sb = self.stats[a], self.stats[b]
        return self._node("Add", name, [a, b], self.shapes[a], Stats(sa.mean + sb.mean, sa.var + sb.var))

    def concat(self, name: str, xs: list[str]) -> str:
        n, _, h, w = self.shapes[xs[0]]
        channels = sum(self.shapes[x][1] for x in xs)
        stats = Stats(
            np.concatenate([self.stats[x].mean for x in xs]),
            np.concatenate([self.stats[x].var for x in xs]),
        )
        return self._node("Concat", name, xs, (n, channels, h, w), stats, axis=1)

    def dropout(self, name: str, x: str) -> str:
        """Dropout (ratio 0.5, training_mode false): the identity in inference."""
        return self._node("Dropout", name, [x], self.shapes[x], self.stats[x])

    # ---- the model -------------------------------------------------------------------

    def model(self, graph_name: str, output: str) -> onnx.ModelProto:
        """Close the graph: `output` becomes `logits`, every intermediate gets a value_info."""
        last = self.nodes[-1]
        if last.output[0] != output:
            raise NnccError(f"{graph_name}: the output {output} is not produced by the last node")
        last.output[0] = OUTPUT_NAME
        self.shapes[OUTPUT_NAME] = self.shapes.pop(output)
        value_infos = [
            helper.make_tensor_value_info(node.output[0], TensorProto.FLOAT, self.shapes[node.output[0]])
            for node in self.nodes[:-1]
        ]
        graph = helper.make_graph(
            self.nodes,
            graph_name,
            [helper.make_tensor_value_info(INPUT_NAME, TensorProto.FLOAT, self.shapes[INPUT_NAME])],
            [helper.make_tensor_value_info(OUTPUT_NAME, TensorProto.FLOAT, self.shapes[OUTPUT_NAME])],
            value_info=value_infos,
        )
        model = helper.make_model(
            graph,
            opset_imports=[helper.make_opsetid("", OPSET)],
            ir_version=IR_VERSION,
            producer_name="nncc-zoo",
            doc_string=f"{graph_name}: torchvision architecture, fixed-seed random weights",
        )
        for name, array in self.initializers.items():  # in place: copying 500 MB of protos is slow
            add_initializer(model.graph, name, array)
        return model


def add_initializer(graph: onnx.GraphProto, name: str, array: np.ndarray) -> None:
    """Append a float32 initializer to `graph` without an intermediate TensorProto copy."""
    tensor = graph.initializer.add()
    tensor.name = name
    tensor.data_type = TensorProto.FLOAT
    tensor.dims.extend(array.shape)
    tensor.raw_data = array.astype("<f4", copy=False).tobytes()


def pool_size(size: int, kernel: int, stride: int, pad: int, ceil: bool) -> int:
    """Pooled length, with PyTorch's ceil_mode rule (the last window starts inside the input)."""
    span = size + 2 * pad - kernel
    out = (-(-span // stride) if ceil else span // stride) + 1
    if ceil and (out - 1) * stride >= size + pad:
        out -= 1
    return out


def conv_bn(
    b: GraphBuilder, prefix: str, x: str, channels: int, kernel: int, stride: int = 1, groups: int = 1
) -> str:
    """Bias-free conv `prefix.0` + BatchNorm `prefix.1` ('same' padding), torchvision Conv2dNormActivation."""
    x = b.conv(f"{prefix}.0", x, channels, kernel, stride, pad=(kernel - 1) // 2, groups=groups)
    return b.batch_norm(f"{prefix}.1", x)


# --------------------------------------------------------------------------------------
# ResNet (torchvision resnet.py; bottleneck stride on the 3x3 conv, i.e. v1.5)
# --------------------------------------------------------------------------------------


def basic_block(b: GraphBuilder, prefix: str, x: str, channels: int, stride: int) -> str:
    """conv3x3-bn-relu-conv3x3-bn, + identity (or 1x1/stride downsample), relu."""
    identity = downsample(b, prefix, x, channels, stride)
    y = b.conv(f"{prefix}.conv1", x, channels, 3, stride, pad=1)
    y = b.relu(f"{prefix}.relu1", b.batch_norm(f"{prefix}.bn1", y))
    y = b.batch_norm(f"{prefix}.bn2", b.conv(f"{prefix}.conv2", y, channels, 3, 1, pad=1))
    return b.relu(f"{prefix}.relu2", b.add(f"{prefix}.add", y, identity))


def bottleneck(b: GraphBuilder, prefix: str, x: str, width: int, stride: int) -> str:
    """1x1 reduce, 3x3 (strided), 1x1 expand x4, each + BN; + identity/downsample, relu."""
    identity = downsample(b, prefix, x, 4 * width, stride)
    y = b.conv(f"{prefix}.conv1", x, width, 1)
    y = b.relu(f"{prefix}.relu1", b.batch_norm(f"{prefix}.bn1", y))
    y = b.conv(f"{prefix}.conv2", y, width, 3, stride, pad=1)
    y = b.relu(f"{prefix}.relu2", b.batch_norm(f"{prefix}.bn2", y))
    y = b.batch_norm(f"{prefix}.bn3", b.conv(f"{prefix}.conv3", y, 4 * width, 1))
    return b.relu(f"{prefix}.relu3", b.add(f"{prefix}.add", y, identity))


def downsample(b: GraphBuilder, prefix: str, x: str, channels: int, stride: int) -> str:
    """The shortcut: `x` itself, or 1x1/stride conv + BN when the shape changes."""
    if stride == 1 and b.shapes[x][1] == channels:
        return x
    y = b.conv(f"{prefix}.downsample.0", x, channels, 1, stride)
    return b.batch_norm(f"{prefix}.downsample.1", y)


def resnet(b: GraphBuilder, block: Callable, blocks_per_stage: tuple[int, ...]) -> str:
    """7x7/2 stem conv + BN + ReLU, 3x3/2 max pool, four stages (64..512 wide), GAP, FC 1000."""
    x = b.conv("conv1", INPUT_NAME, 64, 7, 2, pad=3)
    x = b.relu("relu", b.batch_norm("bn1", x))
    x = b.max_pool("maxpool", x, 3, 2, pad=1)
    for stage, (width, blocks) in enumerate(zip((64, 128, 256, 512), blocks_per_stage), start=1):
        for index in range(blocks):
            stride = 2 if stage > 1 and index == 0 else 1
            x = block(b, f"layer{stage}.{index}", x, width, stride)
    x = b.flatten("flatten", b.global_average_pool("avgpool", x))
    return b.gemm("fc", x, NUM_CLASSES, gain=1.0)


def resnet18(b: GraphBuilder) -> str:
    return resnet(b, basic_block, (2, 2, 2, 2))


def resnet50(b: GraphBuilder) -> str:
    return resnet(b, bottleneck, (3, 4, 6, 3))


# --------------------------------------------------------------------------------------
# MobileNetV2 (torchvision mobilenetv2.py, width 1.0)
# --------------------------------------------------------------------------------------

# expansion t, output channels c, repeats n, first stride s
MOBILENET_V2_SETTINGS = (
    (1, 16, 1, 1), (6, 24, 2, 2), (6, 32, 3, 2), (6, 64, 4, 2), (6, 96, 3, 1), (6, 160, 3, 2), (6, 320, 1, 1)
)  # fmt: skip


def conv_bn_relu6(
    b: GraphBuilder, prefix: str, x: str, channels: int, kernel: int, stride: int = 1, groups: int = 1
) -> str:
    """torchvision Conv2dNormActivation with ReLU6: `prefix.0` conv, `.1` BN, `.2` Clip."""
    return b.relu6(f"{prefix}.2", conv_bn(b, prefix, x, channels, kernel, stride, groups))


def inverted_residual(
    b: GraphBuilder, prefix: str, x: str, channels: int, stride: int, expansion: int
) -> str:
    """[1x1 expand + BN + ReLU6], 3x3 depthwise + BN + ReLU6, 1x1 project + BN, [+ x]."""
    cin = b.shapes[x][1]
    hidden = cin * expansion
    y, layer = x, 0
    if expansion != 1:
        y = conv_bn_relu6(b, f"{prefix}.conv.{layer}", y, hidden, 1)
        layer += 1
    y = conv_bn_relu6(b, f"{prefix}.conv.{layer}", y, hidden, 3, stride, groups=hidden)
    y = b.conv(f"{prefix}.conv.{layer + 1}", y, channels, 1)
    y = b.batch_norm(f"{prefix}.conv.{layer + 2}", y)
    if stride == 1 and cin == channels:
        y = b.add(f"{prefix}.add", x, y)
    return y


def mobilenet_v2(b: GraphBuilder) -> str:
    """3x3/2 stem (32), 17 inverted residuals, 1x1 conv to 1280, GAP, FC 1000."""
    x = conv_bn_relu6(b, "features.0", INPUT_NAME, 32, 3, 2)
    index = 1
    for expansion, channels, repeats, first_stride in MOBILENET_V2_SETTINGS:
        for repeat in range(repeats):
            stride = first_stride if repeat == 0 else 1
            x = inverted_residual(b, f"features.{index}", x, channels, stride, expansion)
            index += 1
    x = conv_bn_relu6(b, f"features.{index}", x, 1280, 1)
    x = b.flatten("flatten", b.global_average_pool("avgpool", x))
    return b.gemm("classifier.1", x, NUM_CLASSES, gain=1.0)  # classifier.0 is Dropout: omitted


# --------------------------------------------------------------------------------------
# VGG-16 (torchvision vgg.py, configuration "D", no batch norm)
# --------------------------------------------------------------------------------------

VGG16_FEATURES = (64, 64, "M", 128, 128, "M", 256, 256, 256, "M", 512, 512, 512, "M", 512, 512, 512, "M")


def vgg_features(b: GraphBuilder, items) -> str:
    """VGG's convs (3x3, ReLU) and max pools ("M"), numbered as torchvision's `features`."""
    x, index = INPUT_NAME, 0
    for item in items:
        if item == "M":
            x = b.max_pool(f"features.{index}", x, 2, 2)
            index += 1
        else:
            x = b.relu(f"features.{index + 1}", b.conv(f"features.{index}", x, item, 3, 1, pad=1, bias=True))
            index += 2
    return x


def vgg16(b: GraphBuilder) -> str:
    """Features as torchvision numbers them; no AdaptiveAvgPool(7): FC1 takes 512 x (R/32)^2."""
    x = b.flatten("flatten", vgg_features(b, VGG16_FEATURES))
    x = b.dropout("classifier.2", b.relu("classifier.1", b.gemm("classifier.0", x, 4096)))
    x = b.dropout("classifier.5", b.relu("classifier.4", b.gemm("classifier.3", x, 4096)))
    return b.gemm("classifier.6", x, NUM_CLASSES, gain=1.0)


VGG16_HEAD = (64, 64, "M", 128, 128, "M", 256)
"""conv1_1 .. conv3_1 with their two pools: the layers Alwani et al. (MICRO 2016) fuse."""


def vgg16_head(b: GraphBuilder) -> str:
    """VGG-16's first five convs and two pools (features.0 .. features.11), as `vgg16` builds them."""
    return vgg_features(b, VGG16_HEAD)


def build_vgg16_head(resolution: int = 224, seed: int = 0) -> onnx.ModelProto:
    """VGG-16's first five convs (batch 1; not in the zoo's list of whole models)."""
    check_sizes(1, resolution)
    builder = GraphBuilder(np.random.default_rng(seed), 1, resolution)
    return builder.model("vgg16_head", vgg16_head(builder))


# --------------------------------------------------------------------------------------
# SqueezeNet 1.1 (torchvision squeezenet.py)
# --------------------------------------------------------------------------------------

# (squeeze, expand1x1, expand3x3) per fire module; None is a 3x3/2 ceil-mode max pool
SQUEEZENET1_1_FEATURES = (None, (16, 64, 64), (16, 64, 64), None, (32, 128, 128), (32, 128, 128), None,
                          (48, 192, 192), (48, 192, 192), (64, 256, 256), (64, 256, 256))  # fmt: skip


def fire(b: GraphBuilder, prefix: str, x: str, squeeze: int, expand1x1: int, expand3x3: int) -> str:
    """1x1 squeeze + ReLU, then 1x1 and 3x3 expands + ReLU, concatenated on channels."""
    s = b.relu(f"{prefix}.squeeze_activation", b.conv(f"{prefix}.squeeze", x, squeeze, 1, bias=True))
    e1 = b.conv(f"{prefix}.expand1x1", s, expand1x1, 1, bias=True)
    e3 = b.conv(f"{prefix}.expand3x3", s, expand3x3, 3, pad=1, bias=True)
    e1 = b.relu(f"{prefix}.expand1x1_activation", e1)
    e3 = b.relu(f"{prefix}.expand3x3_activation", e3)
    return b.concat(f"{prefix}.concat", [e1, e3])


def squeezenet1_1(b: GraphBuilder) -> str:
    """3x3/2 conv (64), fire modules between ceil-mode pools, 1x1 conv to 1000 + ReLU, GAP."""
    x = b.relu("features.1", b.conv("features.0", INPUT_NAME, 64, 3, 2, bias=True))
    for index, item in enumerate(SQUEEZENET1_1_FEATURES, start=2):
        if item is None:
            x = b.max_pool(f"features.{index}", x, 3, 2, ceil=True)
        else:
            x = fire(b, f"features.{index}", x, *item)
    x = b.conv("classifier.1", x, NUM_CLASSES, 1, bias=True)  # classifier.0 is Dropout: omitted
    x = b.global_average_pool("classifier.3", b.relu("classifier.2", x))
    return b.flatten("flatten", x)


# --------------------------------------------------------------------------------------
# DenseNet-121 (torchvision densenet.py: growth 32, blocks (6, 12, 24, 16), bn_size 4, 64 stem)
# --------------------------------------------------------------------------------------

DENSENET121_BLOCKS = (6, 12, 24, 16)
DENSENET_GROWTH, DENSENET_BN_SIZE = 32, 4


def dense_layer(b: GraphBuilder, prefix: str, x: str) -> str:
    """BN-ReLU-1x1 conv (4 x growth) - BN-ReLU-3x3 conv (growth): the new features only."""
    y = b.relu(f"{prefix}.relu1", b.batch_norm(f"{prefix}.norm1", x))
    y = b.conv(f"{prefix}.conv1", y, DENSENET_BN_SIZE * DENSENET_GROWTH, 1)
    y = b.relu(f"{prefix}.relu2", b.batch_norm(f"{prefix}.norm2", y))
    return b.conv(f"{prefix}.conv2", y, DENSENET_GROWTH, 3, pad=1)


def densenet121(b: GraphBuilder) -> str:
    """7x7/2 stem + BN + ReLU + 3x3/2 max pool; four dense blocks (every layer reads the
    concatenation of all features before it) with BN-ReLU-1x1-avgpool transitions halving the
    channels; BN, ReLU, GAP, FC 1000."""
    x = b.conv("features.conv0", INPUT_NAME, 64, 7, 2, pad=3)
    x = b.relu("features.relu0", b.batch_norm("features.norm0", x))
    x = b.max_pool("features.pool0", x, 3, 2, pad=1)
    for block, layers in enumerate(DENSENET121_BLOCKS, start=1):
        for layer in range(1, layers + 1):
            prefix = f"features.denseblock{block}.denselayer{layer}"
            x = b.concat(f"{prefix}.concat", [x, dense_layer(b, prefix, x)])
        if block < len(DENSENET121_BLOCKS):
            prefix = f"features.transition{block}"
            y = b.relu(f"{prefix}.relu", b.batch_norm(f"{prefix}.norm", x))
            y = b.conv(f"{prefix}.conv", y, b.shapes[y][1] // 2, 1)
            x = b.average_pool(f"{prefix}.pool", y, 2, 2)
    x = b.relu("features.relu5", b.batch_norm("features.norm5", x))
    x = b.flatten("flatten", b.global_average_pool("avgpool", x))
    return b.gemm("classifier", x, NUM_CLASSES, gain=1.0)


# --------------------------------------------------------------------------------------
# Public API
# --------------------------------------------------------------------------------------

_ARCHITECTURES: dict[str, tuple[Callable[[GraphBuilder], str], str]] = {
    "resnet18": (resnet18, "ResNet-18: basic blocks [2,2,2,2], 11.7M params"),
    "resnet50": (resnet50, "ResNet-50 v1.5: bottlenecks [3,4,6,3], 25.6M params"),
    "mobilenet_v2": (mobilenet_v2, "MobileNetV2 width 1.0: inverted residuals, ReLU6, 3.5M params"),
    "vgg16": (vgg16, "VGG-16 (config D, no BN): 13 conv + 3 FC, 138M params at 224"),
    "squeezenet1_1": (squeezenet1_1, "SqueezeNet 1.1: 8 fire modules, 1.2M params"),
    "densenet121": (densenet121, "DenseNet-121: dense blocks [6,12,24,16], growth 32, BN-ReLU-conv, 8.0M params"),
}
MODELS: tuple[str, ...] = tuple(_ARCHITECTURES)


def describe(name: str) -> str:
    """One line saying what the model is."""
    return _ARCHITECTURES[check_name(name)][1]


def check_name(name: str) -> str:
    if name not in _ARCHITECTURES:
        raise NnccError(f"unknown model '{name}' (choose from {', '.join(MODELS)})")
    return name


def check_sizes(batch: int, resolution: int) -> None:
    """Batch >= 1; resolution a multiple of 32 and >= 32 (every model downsamples by 32)."""
    if batch < 1:
        raise NnccError(f"batch must be at least 1, got {batch}")
    if resolution < RESOLUTION_STEP or resolution % RESOLUTION_STEP:
        raise NnccError(
            f"resolution must be a multiple of {RESOLUTION_STEP} and at least {RESOLUTION_STEP}, got {resolution}"
        )
    if resolution > MAX_RESOLUTION:
        raise NnccError(f"resolution {resolution} is more than the zoo builds (at most {MAX_RESOLUTION})")
    if batch * 3 * resolution**2 > MAX_INPUT_ELEMENTS:
        raise NnccError(f"batch {batch} x 3 x {resolution} x {resolution} is too large an input "
                        f"(at most {MAX_INPUT_ELEMENTS} elements, as nncc imports)")


def build_model(name: str, batch: int = 1, resolution: int = 224, seed: int = 0) -> onnx.ModelProto:
    """Build zoo model `name` with input `input` [batch,3,R,R] and output `logits` [batch,1000]."""
    architecture = _ARCHITECTURES[check_name(name)][0]
    check_sizes(batch, resolution)
    builder = GraphBuilder(np.random.default_rng(seed), batch, resolution)
    output = architecture(builder)
    return builder.model(name, output)


def count_parameters(model: onnx.ModelProto) -> int:
    """Learnable parameters as torchvision counts them: conv/gemm weights and biases, BN gamma/beta."""
    sizes = {t.name: math.prod(t.dims) for t in model.graph.initializer}
    learnable = {
        node.input[i]
        for node in model.graph.node
        for i in LEARNABLE_INPUTS.get(node.op_type, ())
        if i < len(node.input) and node.input[i] in sizes
    }
    return sum(sizes[name] for name in learnable)


def tensor_shapes(model: onnx.ModelProto) -> dict[str, tuple[int, ...]]:
    """Static shapes of every tensor: from the graph's value_info, else from ONNX shape inference."""
    graph = model.graph
    if not graph.value_info and len(graph.node) > 1:
        graph = onnx.shape_inference.infer_shapes(model).graph
    shapes = {t.name: tuple(t.dims) for t in graph.initializer}
    for info in (*graph.input, *graph.value_info, *graph.output):
        dims = info.type.tensor_type.shape.dim
        shapes[info.name] = tuple(d.dim_value for d in dims)
    return shapes


def count_macs(model: onnx.ModelProto) -> int:
    """Multiply-accumulates of every Conv and Gemm (for the model's batch size)."""
    shapes = tensor_shapes(model)
    macs = 0
    for node in model.graph.node:
        if node.op_type == "Conv":
            weight = shapes[node.input[1]]
            macs += math.prod(shapes[node.output[0]]) * math.prod(weight[1:])
        elif node.op_type == "Gemm":
            transposed = next((a.i for a in node.attribute if a.name == "transA"), 0)
            inner = shapes[node.input[0]][0 if transposed else 1]
            macs += math.prod(shapes[node.output[0]]) * inner
    return macs
