"""Every training kernel of `nn_kernels` (what the nn interpreter runs for autodiff's ops) against
PyTorch autograd, for every attribute combination the ops take: strides that drop input rows,
asymmetric pads, dilations, groups, depthwise, ceil_mode, count_include_pad.

Tolerance: float32 on both sides in different summation orders; the largest error must stay
within 1e-5 of the largest |value| (the sums here have at most a few thousand terms: their
rounding error is ~sqrt(terms) x 6e-8 of the sum of |terms|)."""

import numpy as np
import pytest

from nncc.compiler import nn_kernels as k

torch = pytest.importorskip("torch")
F = torch.nn.functional
RTOL = 1e-5


def close(ours, theirs, rtol=RTOL):
    theirs = theirs.detach().numpy() if hasattr(theirs, "detach") else np.asarray(theirs)
    assert ours.shape == theirs.shape
    scale = max(float(np.abs(theirs).max()), 1e-6)
    err = float(np.abs(ours.astype(np.float64) - theirs).max())
    assert err <= rtol * scale, f"max abs err {err:.3g}, scale {scale:.3g}"


def rand(rng, *shape):
    return rng.standard_normal(shape).astype(np.float32)


def torch_pad(x, pads, value=0.0):
    top, left, bottom, right = pads
    return F.pad(x, (left, right, top, bottom), value=value)


CONV_CASES = [
    # (input NCHW, weight OIHW, strides, pads [t, l, b, r], dilations, group)
    ((2, 3, 8, 8), (4, 3, 3, 3), (1, 1), (1, 1, 1, 1), (1, 1), 1),
    ((2, 3, 8, 8), (4, 3, 3, 3), (2, 2), (0, 0, 0, 0), (1, 1), 1),       # 8 -> 3: row 7 never read
    ((2, 3, 9, 7), (5, 3, 3, 2), (2, 3), (1, 0, 2, 1), (1, 1), 1),       # asymmetric pads, odd strides
    ((2, 4, 10, 10), (6, 4, 3, 3), (1, 1), (2, 2, 2, 2), (2, 2), 1),     # dilation 2
    ((2, 4, 9, 9), (6, 2, 3, 3), (2, 2), (1, 1, 0, 0), (1, 2), 2),       # groups 2, mixed dilation
    ((2, 6, 8, 8), (6, 1, 3, 3), (1, 1), (1, 1, 1, 1), (1, 1), 6),       # depthwise
    ((2, 6, 9, 9), (6, 1, 5, 5), (2, 2), (2, 1, 2, 1), (1, 1), 6),       # depthwise 5x5 stride 2
    ((2, 8, 7, 7), (16, 1, 3, 3), (2, 2), (1, 1, 1, 1), (1, 1), 8),      # depthwise multiplier 2
    ((3, 5, 4, 4), (7, 5, 1, 1), (1, 1), (0, 0, 0, 0), (1, 1), 1),       # pointwise
    ((2, 3, 11, 11), (4, 3, 7, 7), (4, 4), (3, 2, 1, 0), (1, 1), 1),     # large kernel, stride 4
]


@pytest.mark.parametrize("case", CONV_CASES, ids=lambda c: f"x{c[0]}w{c[1]}s{c[2]}p{c[3]}d{c[4]}g{c[5]}")
def test_conv_backward_data_and_filter(case):
    x_shape, w_shape, strides, pads, dilations, group = case
    rng = np.random.default_rng(0)
    x, w = rand(rng, *x_shape), rand(rng, *w_shape)
    tx, tw = torch.tensor(x, requires_grad=True), torch.tensor(w, requires_grad=True)
    y = F.conv2d(torch_pad(tx, pads), tw, stride=strides, dilation=dilations, groups=group)
    ours_y = k.conv2d(x, w, None, strides, pads, dilations, group)
    close(ours_y, y)
    dy = rand(rng, *y.shape)
    y.backward(torch.tensor(dy))
    close(k.conv2d_backward_data(dy, w, x_shape, strides, pads, dilations, group), tx.grad)
    close(k.conv2d_backward_filter(x, dy, w_shape, strides, pads, dilations, group), tw.grad)


POOL_CASES = [
    # (input, kernel, strides, pads, dilations, ceil_mode)
    ((2, 3, 8, 8), (2, 2), (2, 2), (0, 0, 0, 0), (1, 1), False),
    ((2, 3, 9, 9), (3, 3), (2, 2), (1, 1, 1, 1), (1, 1), False),
    ((2, 3, 9, 9), (3, 3), (2, 2), (0, 0, 0, 0), (1, 1), True),          # ceil mode overhang
    ((2, 3, 10, 10), (3, 3), (3, 3), (0, 0, 0, 0), (1, 1), False),       # last row dropped
    ((2, 3, 11, 11), (3, 3), (1, 1), (1, 1, 1, 1), (2, 2), False),       # dilation
    ((2, 3, 8, 9), (3, 2), (2, 1), (1, 0, 1, 0), (1, 1), True),
]


@pytest.mark.parametrize("case", POOL_CASES, ids=lambda c: f"x{c[0]}k{c[1]}s{c[2]}p{c[3]}d{c[4]}c{int(c[5])}")
def test_max_pool_backward(case):
    x_shape, kernel, strides, pads, dilations, ceil_mode = case
    rng = np.random.default_rng(1)
    x = rand(rng, *x_shape)
    tx = torch.tensor(x, requires_grad=True)
    y = F.max_pool2d(tx, kernel, strides, (pads[0], pads[1]), dilations, ceil_mode=ceil_mode)
    close(k.max_pool(x, kernel, strides, pads, dilations, ceil_mode), y)
    dy = rand(rng, *y.shape)
    y.backward(torch.tensor(dy))
    close(k.max_pool_backward(dy, x, kernel, strides, pads, dilations, ceil_mode), tx.grad)


@pytest.mark.parametrize("count_include_pad", [False, True])
@pytest.mark.parametrize("case", [c for c in POOL_CASES if c[4] == (1, 1)],
                         ids=lambda c: f"x{c[0]}k{c[1]}s{c[2]}p{c[3]}c{int(c[5])}")
def test_avg_pool_backward(case, count_include_pad):
    x_shape, kernel, strides, pads, dilations, ceil_mode = case
    rng = np.random.default_rng(2)
    x = rand(rng, *x_shape)
    tx = torch.tensor(x, requires_grad=True)
    y = F.avg_pool2d(tx, kernel, strides, (pads[0], pads[1]), ceil_mode=ceil_mode,
                     count_include_pad=count_include_pad)
    close(k.avg_pool(x, kernel, strides, pads, dilations, ceil_mode, count_include_pad), y)
    dy = rand(rng, *y.shape)
    y.backward(torch.tensor(dy))
    close(k.avg_pool_backward(dy, x_shape, kernel, strides, pads, dilations, ceil_mode, count_include_pad), tx.grad)


def test_asymmetric_pads_pool_backward():
    """Pads [1, 0, 2, 1] (PyTorch has only symmetric ones: padded by hand with -inf / counted)."""
    rng = np.random.default_rng(3)
    x = rand(rng, 2, 3, 7, 8)
    pads, kernel, strides = (1, 0, 2, 1), (3, 3), (2, 2)
    tx = torch.tensor(x, requires_grad=True)
    y = F.max_pool2d(torch_pad(tx, pads, -np.inf), kernel, strides)
    dy = rand(rng, *y.shape)
    y.backward(torch.tensor(dy))
    close(k.max_pool_backward(dy, x, kernel, strides, pads, (1, 1), False), tx.grad)
    tx.grad = None
    y = F.avg_pool2d(torch_pad(tx, pads), kernel, strides)  # count_include_pad: every window has 9
    y.backward(torch.tensor(dy))
    close(k.avg_pool_backward(dy, x.shape, kernel, strides, pads, (1, 1), False, True), tx.grad)


def test_global_pool_backward():
    rng = np.random.default_rng(4)
    x = rand(rng, 2, 5, 4, 3)
    tx = torch.tensor(x, requires_grad=True)
    dy = rand(rng, 2, 5, 1, 1)
    tx.mean(dim=(2, 3), keepdim=True).backward(torch.tensor(dy))
    close(k.global_avg_pool_backward(dy, x.shape), tx.grad)
    tx.grad = None
    tx.amax(dim=(2, 3), keepdim=True).backward(torch.tensor(dy))
    close(k.global_max_pool_backward(dy, x), tx.grad)


@pytest.mark.parametrize("shape", [(4, 6), (2, 3, 5, 5)])
def test_batch_norm_train_and_backward(shape):
    rng = np.random.default_rng(5)
    x = rand(rng, *shape) * 2 + 0.5
    c = shape[1]
    scale, bias = rand(rng, c), rand(rng, c)
    mean, var = rand(rng, c) * 0.1, np.abs(rand(rng, c)) + 0.5
    tx, ts, tb = (torch.tensor(a, requires_grad=True) for a in (x, scale, bias))
    tm, tv = torch.tensor(mean), torch.tensor(var)
    y = F.batch_norm(tx, tm, tv, ts, tb, training=True, momentum=0.1, eps=1e-5)
    ours = k.batch_norm_train(x, scale, bias, mean, var, 1e-5, 0.9)
    close(ours[0], y)
    close(ours[3], tm)
    close(ours[4], tv)
    dy = rand(rng, *shape)
    y.backward(torch.tensor(dy))
    dx, dscale, dbias = k.batch_norm_backward(dy, x, scale, ours[1], ours[2])
    close(dx, tx.grad)
    close(dscale, ts.grad)
    close(dbias, tb.grad)


ACTIVATIONS = [
    ("relu", lambda t: F.relu(t), k.relu_backward, ()),
    ("sigmoid", torch.sigmoid, k.sigmoid_backward, ()),
    ("hard_swish", F.hardswish, k.hard_swish_backward, ()),
    ("leaky_relu", lambda t: F.leaky_relu(t, 0.1), k.leaky_relu_backward, (0.1,)),
    ("clip", lambda t: torch.clamp(t, 0.0, 6.0), k.clip_backward, (0.0, 6.0)),
    ("relu6_shifted", lambda t: torch.clamp(t, -1.0, 1.5), k.clip_backward, (-1.0, 1.5)),
    ("hard_sigmoid", lambda t: torch.clamp(t * 0.2 + 0.5, 0, 1), k.hard_sigmoid_backward, (0.2, 0.5)),
    ("hard_sigmoid_onnx_pytorch", F.hardsigmoid, k.hard_sigmoid_backward, (1 / 6, 0.5)),
    ("tanh", torch.tanh, k.tanh_backward, ()),
    ("silu", F.silu, k.silu_backward, ()),
    ("gelu", F.gelu, k.gelu_backward, ()),
]


@pytest.mark.parametrize("name, forward, backward, attrs", ACTIVATIONS, ids=[a[0] for a in ACTIVATIONS])
def test_activation_backward(name, forward, backward, attrs):
    rng = np.random.default_rng(6)
    x = rand(rng, 3, 4, 5, 5) * 4
    tx = torch.tensor(x, requires_grad=True)
    dy = rand(rng, *x.shape)
    forward(tx).backward(torch.tensor(dy))
    close(backward(dy, x, *attrs), tx.grad)


def test_softmax_cross_entropy_and_mse():
    rng = np.random.default_rng(7)
    logits = rand(rng, 4, 10) * 3
    labels = np.array([1, 9, 0, 4])
    target = np.eye(10, dtype=np.float32)[labels]
    tl = torch.tensor(logits, requires_grad=True)
    loss = F.cross_entropy(tl, torch.tensor(labels))
    loss.backward()
    close(k.softmax_cross_entropy(logits, target), loss.reshape(1))
    close(k.softmax_cross_entropy_backward(logits, target), tl.grad)
    wanted = rand(rng, 4, 10)
    tl.grad = None
    loss = F.mse_loss(tl, torch.tensor(wanted))
    loss.backward()
    close(k.mse_loss(logits, wanted), loss.reshape(1))
    close(k.mse_loss_backward(logits, wanted), tl.grad)


@pytest.mark.parametrize("momentum, weight_decay", [(0.0, 0.0), (0.9, 0.0), (0.0, 1e-2), (0.9, 5e-4)])
def test_sgd_matches_torch_optim(momentum, weight_decay):
    rng = np.random.default_rng(8)
    w = rand(rng, 5, 4)
    tw = torch.tensor(w, requires_grad=True)
    optimizer = torch.optim.SGD([tw], lr=0.1, momentum=momentum, weight_decay=weight_decay)
    velocity = np.zeros_like(w) if momentum else None
    for _ in range(3):
        grad = rand(rng, 5, 4)
        tw.grad = torch.tensor(grad)
        optimizer.step()
        w, velocity = k.sgd(w, grad, velocity, 0.1, momentum, weight_decay)
        close(w, tw)


def test_reduce_sum_and_scale():
    x = np.arange(24, dtype=np.float32).reshape(2, 3, 4)
    assert k.reduce_sum(x, [0, 2]).tolist() == x.sum(axis=(0, 2)).tolist()
    assert k.scale(x, -0.5).tolist() == (x * -0.5).tolist()
