"""torchvision's classification architectures, exported both ways, on every target (a benchmark, not a test).

Needs torch and torchvision in a separate venv (they are not nncc dependencies; on this machine
only this pair works, PyPI's torchvision beside torch 2.13.0 does not import):

    python -m venv /tmp/tvenv
    /tmp/tvenv/bin/pip install torch==2.14.1 torchvision==0.29.1 onnx onnxscript
    python benchmarks/bench_torchvision_exports.py --torch-python /tmp/tvenv/bin/python \\
        --out /tmp/tv_exports [--models resnet18 vgg11 ...] [--targets reference vector fusion edge] \\
        [--results runs.tsv]       # each run's line appended; rerunning reuses them (resume a sweep)

Step 1 runs this file under the venv's python (`--export-only`): each architecture with random
weights (seed 0, eval mode; GoogLeNet and Inception-v3 without their auxiliary heads) at the
resolution in `RESOLUTIONS` (`LEGACY_RESOLUTIONS` for the legacy exporter), exported with the dynamo exporter
(`dynamo=True`, torch's default: opset 20 here) and the legacy one (`dynamo=False`, opset 17) to
`OUT/NAME.dynamo.onnx` and `OUT/NAME.legacy.onnx` (a model already there is kept). Step 2 runs
`nncc MODEL --target=T --check` (compile, run on the simulated machine, compare with onnxruntime)
for each model and target, and prints one line per run and a markdown table at the end.
"""

from __future__ import annotations

import argparse
import subprocess
import sys
from pathlib import Path

# Architecture -> input resolution: small enough to simulate quickly, large enough that every
# stride and pooling window of the architecture still has an input (inception_v3 needs >= 75).
RESOLUTIONS = {
    "resnet18": 64, "resnet50": 64, "resnext50_32x4d": 64, "wide_resnet50_2": 64,
    "vgg11": 64, "vgg16": 64, "alexnet": 64,
    "squeezenet1_0": 64, "squeezenet1_1": 64, "densenet121": 64,
    "mobilenet_v2": 64, "mobilenet_v3_small": 64, "mobilenet_v3_large": 64,
    "shufflenet_v2_x1_0": 64, "mnasnet1_0": 64, "efficientnet_b0": 64,
    "regnet_x_400mf": 64, "regnet_y_400mf": 64, "googlenet": 64, "inception_v3": 299,
    "convnext_tiny": 64,
}
LEGACY_RESOLUTIONS = {"alexnet": 224, "vgg11": 224, "vgg16": 224}
"""The legacy exporter refuses adaptive_avg_pool2d whose output size does not divide its input
("output size that are not factor of input size"): at 64x64 VGG's 2x2 and AlexNet's 1x1
features pool to 7x7 and 6x6, so these export at 224x224 (7x7 and 6x6 features) with it."""
EXPORTERS = ("dynamo", "legacy")


def export_all(names: list[str], out: Path) -> None:
    """Export each architecture both ways (run under the venv that has torch and torchvision)."""
    import torch
    import torchvision

    out.mkdir(parents=True, exist_ok=True)
    for name in names:
        torch.manual_seed(0)
        kwargs = {"aux_logits": False, "init_weights": True} if name in ("googlenet", "inception_v3") else {}
        model = getattr(torchvision.models, name)(weights=None, **kwargs).eval()
        for exporter in EXPORTERS:
            size = LEGACY_RESOLUTIONS.get(name, RESOLUTIONS[name]) if exporter == "legacy" else RESOLUTIONS[name]
            x = torch.randn(1, 3, size, size)
            path = out / f"{name}.{exporter}.onnx"
            if path.exists():
                continue
            try:
                if exporter == "dynamo":
                    torch.onnx.export(model, (x,), str(path), dynamo=True, external_data=False,
                                      input_names=["x"], output_names=["logits"])
                else:
                    torch.onnx.export(model, (x,), str(path), dynamo=False, opset_version=17,
                                      input_names=["x"], output_names=["logits"])
                print(f"exported {path.name}", flush=True)
            except Exception as error:  # noqa: BLE001 - a benchmark reports and goes on
                print(f"export of {path.name} failed: {type(error).__name__}: {str(error)[:200]}", flush=True)


def check(path: Path, target: str) -> str:
    """One `nncc --check` run: 'pass' or 'FAIL (exit code): the last line it printed'."""
    run = subprocess.run([sys.executable, "-m", "nncc.compiler.cli", str(path), f"--target={target}",
                          "--check", "-q"], capture_output=True, text=True, check=False)
    last = (run.stdout + run.stderr).strip().splitlines()[-1:] or [""]
    return "pass" if run.returncode == 0 else f"FAIL ({run.returncode}): {last[0][:160]}"


def markdown_table(rows, models, exporters, targets) -> str:
    """Architecture x exporter: 'pass' on every target, or each failing target with its line."""
    lines = ["| architecture | input | " + " | ".join(exporters) + " |", "| --- | --- |" + " --- |" * len(exporters)]
    for name in models:
        cells = []
        for exporter in exporters:
            failed = [f"{t}: {rows[name, exporter, t]}" for t in targets if rows[name, exporter, t] != "pass"]
            cells.append("pass on " + ", ".join(targets) if not failed else "; ".join(failed))
        legacy = LEGACY_RESOLUTIONS.get(name)
        size = f"{RESOLUTIONS[name]}" + (f" (legacy {legacy})" if legacy and "legacy" in exporters else "")
        lines.append(f"| {name} | {size} | " + " | ".join(cells) + " |")
    return "\n".join(lines)


def read_results(path: Path) -> dict[tuple[str, str, str], str]:
    """The runs recorded in a --results file: (architecture, exporter, target) -> line."""
    if not path.exists():
        return {}
    rows = (line.rstrip("\n").split("\t") for line in path.read_text().splitlines() if line.strip())
    return {(name, exporter, target): result for name, exporter, target, result in rows}


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--out", type=Path, default=Path("/tmp/tv_exports"), help="the exported models")
    parser.add_argument("--torch-python", help="python of the venv with torch and torchvision (step 1)")
    parser.add_argument("--export-only", action="store_true", help="step 1 only (run under that python)")
    parser.add_argument("--models", nargs="+", default=list(RESOLUTIONS), choices=list(RESOLUTIONS))
    parser.add_argument("--exporters", nargs="+", default=list(EXPORTERS), choices=EXPORTERS)
    parser.add_argument("--targets", nargs="+", default=["reference", "vector", "fusion", "edge"])
    parser.add_argument("--results", type=Path, help="append each run's line to this file and reuse the "
                        "lines already in it (resume an interrupted sweep)")
    args = parser.parse_args()
    if args.export_only:
        export_all(args.models, args.out)
        return 0
    if args.torch_python:
        subprocess.run([args.torch_python, __file__, "--export-only", "--out", str(args.out),
                        "--models", *args.models], check=True)
    done = read_results(args.results) if args.results else {}
    rows = {}
    for name in args.models:
        for exporter in args.exporters:
            path = args.out / f"{name}.{exporter}.onnx"
            for target in args.targets:
                line = done.get((name, exporter, target))
                if line is None:
                    line = check(path, target) if path.exists() else "FAIL: not exported"
                    if args.results:
                        with args.results.open("a") as results:
                            results.write(f"{name}\t{exporter}\t{target}\t{line}\n")
                rows[name, exporter, target] = line
                print(f"{path.name:36s} {target:9s} {line}", flush=True)
    print()
    print(markdown_table(rows, args.models, args.exporters, args.targets))
    passed = sum(line == "pass" for line in rows.values())
    everywhere = {exporter: sum(all(rows[name, exporter, t] == "pass" for t in args.targets)
                                for name in args.models) for exporter in args.exporters}
    print(f"\n{passed} of {len(rows)} runs pass; architectures passing on every target: "
          + ", ".join(f"{exporter} {count}/{len(args.models)}" for exporter, count in everywhere.items()))
    return 0 if passed == len(rows) else 1


if __name__ == "__main__":
    sys.exit(main())
