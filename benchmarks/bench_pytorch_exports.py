"""PyTorch's two ONNX exporters on small networks after torchvision's blocks (a benchmark, not a test).

    pip install torch==2.13.0 onnxscript        # in a separate venv: torch is not an nncc dependency
    python benchmarks/bench_pytorch_exports.py [--out DIR] [--targets reference vector fusion edge]

Exports each network with the dynamo exporter (`dynamo=True`, the default since torch 2.9: opset 20,
ReduceMean for adaptive pooling, Split, LayerNormalization, Gelu) and the legacy one (`dynamo=False`,
opset 17), then runs `nncc MODEL --target=T --check` on each and prints one line per run. The tests
build the same graph forms with onnx.helper, so they need no torch.
"""

from __future__ import annotations

import argparse
import subprocess
import sys
import tempfile
from pathlib import Path

import torch
import torch.nn as nn
import torch.nn.functional as F

torch.manual_seed(0)


class ResNetBlock(nn.Module):
    """torchvision ResNet's stem + basic block + AdaptiveAvgPool2d((1, 1)) + flatten + Linear."""

    def __init__(self):
        super().__init__()
        self.conv1, self.bn1 = nn.Conv2d(3, 16, 3, 2, 1), nn.BatchNorm2d(16)
        self.conv2, self.bn2 = nn.Conv2d(16, 16, 3, 1, 1), nn.BatchNorm2d(16)
        self.pool, self.fc = nn.AdaptiveAvgPool2d((1, 1)), nn.Linear(16, 10)

    def forward(self, x):
        y = F.relu(self.bn1(self.conv1(x)))
        y = F.relu(y + self.bn2(self.conv2(y)))
        return self.fc(torch.flatten(self.pool(y), 1))


class MeanHead(nn.Module):
    """A classifier head written as x.mean([2, 3])."""

    def __init__(self):
        super().__init__()
        self.conv, self.fc = nn.Conv2d(3, 8, 3, 1, 1), nn.Linear(8, 5)

    def forward(self, x):
        return self.fc(F.relu(self.conv(x)).mean([2, 3]))


class SqueezeExcitationSiLU(nn.Module):
    """EfficientNet-style: SiLU, squeeze-excitation (adaptive pooling, sigmoid gate)."""

    def __init__(self):
        super().__init__()
        self.conv, self.fc = nn.Conv2d(3, 16, 3, 1, 1), nn.Linear(16, 5)
        self.reduce, self.expand = nn.Conv2d(16, 4, 1), nn.Conv2d(4, 16, 1)

    def forward(self, x):
        y = F.silu(self.conv(x))
        gate = torch.sigmoid(self.expand(F.silu(self.reduce(F.adaptive_avg_pool2d(y, 1)))))
        return self.fc(torch.flatten(F.adaptive_avg_pool2d(y * gate, 1), 1))


class ShuffleUnit(nn.Module):
    """ShuffleNet-v2's unit: channel split, a depthwise branch, concat, channel shuffle."""

    def __init__(self):
        super().__init__()
        self.conv = nn.Conv2d(3, 16, 1)
        self.depthwise, self.pointwise = nn.Conv2d(8, 8, 3, 1, 1, groups=8), nn.Conv2d(8, 8, 1)

    def forward(self, x):
        kept, branch = self.conv(x).chunk(2, dim=1)
        y = torch.cat([kept, F.relu(self.pointwise(self.depthwise(branch)))], 1)
        n, c, h, w = y.shape
        return y.view(n, 2, c // 2, h, w).transpose(1, 2).contiguous().view(n, c, h, w)


class ConvNeXtBlock(nn.Module):
    """ConvNeXt's patchify stem and block: depthwise 7x7, permute, LayerNorm, Linear, GELU, Linear."""

    def __init__(self):
        super().__init__()
        self.stem, self.depthwise = nn.Conv2d(3, 8, 4, 4), nn.Conv2d(8, 8, 7, 1, 3, groups=8)
        self.norm = nn.LayerNorm(8, eps=1e-6)
        self.expand, self.project = nn.Linear(8, 32), nn.Linear(32, 8)

    def forward(self, x):
        x = self.stem(x)
        y = self.depthwise(x).permute(0, 2, 3, 1)
        y = self.project(F.gelu(self.expand(self.norm(y)))).permute(0, 3, 1, 2)
        return x + y


MODELS = {"resnet_block": ResNetBlock, "mean_head": MeanHead, "se_silu": SqueezeExcitationSiLU,
          "shuffle_unit": ShuffleUnit, "convnext_block": ConvNeXtBlock}


def export(model: nn.Module, path: Path, dynamo: bool) -> None:
    x = torch.randn(1, 3, 32, 32)
    if dynamo:
        torch.onnx.export(model.eval(), (x,), str(path), dynamo=True, external_data=False)
    else:
        torch.onnx.export(model.eval(), (x,), str(path), dynamo=False, opset_version=17)


def check(path: Path, target: str, folder: Path) -> str:
    program = [] if target == "reference" else ["--program", str(folder / "p")]
    run = subprocess.run([sys.executable, "-m", "nncc.compiler.cli", str(path), f"--target={target}",
                          "--check", "-q", *program], capture_output=True, text=True)
    last = (run.stdout + run.stderr).strip().splitlines()[-1:] or [""]
    return ("pass" if run.returncode == 0 else f"FAIL ({run.returncode})") + ": " + last[0][:140]


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--out", type=Path, help="keep the exported models here")
    parser.add_argument("--targets", nargs="+", default=["reference", "vector", "fusion", "edge"])
    args = parser.parse_args()
    folder = args.out or Path(tempfile.mkdtemp(prefix="nncc-exports-"))
    failures = 0
    for name, network in MODELS.items():
        for exporter in ("dynamo", "legacy"):
            path = folder / f"{name}.{exporter}.onnx"
            export(network(), path, exporter == "dynamo")
            for target in args.targets:
                line = check(path, target, folder)
                failures += not line.startswith("pass")
                print(f"{path.name:28s} {target:9s} {line}")
    return 1 if failures else 0


if __name__ == "__main__":
    sys.exit(main())
