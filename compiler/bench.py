"""`nncc-bench`: the seed papers' tables on nncc's simulator, beside the papers' numbers.

    nncc-bench                                  # everything at the papers' sizes (a few minutes)
    nncc-bench --only vgg --resolution 64       # one part, smaller
    nncc-bench --quick                          # every part at 64x64, FC batch 16

(a) `vgg`: VGG-16 inference on `vector` (Chen, Li, Liu 2024): per conv/FC layer the MAC
    efficiency (MACs / (cycles x MAC units)), the layer's roofline bound on the target (all MAC
    units busy, or DRAM streaming its input, weights and output once) and how close the layer
    gets to it; convs at `--batch`, FC layers at `--fc-batch` (the classifier alone, input
    [fc-batch, 512 x (R/32)^2]), averages beside the paper's (conv 86.62 %, FC 93.17 %).
(b) `scan`: MobileNetV2 and ResNet-50 on `edge` (Wu 2019): DRAM bytes per layer and in total
    with `--tile-order=naive` vs `scan`, and the saving; totals again with `--tile-objective=dram`.
(c) `resnet`: ResNet-50 (batch 1): compile time (ONNX -> isa program, as `nncc` does it) and
    simulation time (goals: under 15 s and 30 s).
(d) `zoo`: every zoo model (batch 1, `--zoo-resolution`) on every preset target, its outputs
    held to onnxruntime's as `nncc --check` does; compile and simulation times, cycles.
(j) `bn`: one training step of ResNet-50 and DenseNet-121 on `fusion` (batch `--bn-batch`), with
    and without `fuse-batch-norm-training` (Yang et al. 2023; Jung et al. 2019): cycles per phase
    and the speed-ups beside the papers', the BatchNorm/ReLU layers' own cycles and DRAM bytes,
    total DRAM bytes and energy; `--bn-plot FILE.png` draws the cycles per phase.
(l) `bound`: every 1x1 conv of MobileNetV2 on `edge` (64K entries), layer by layer: its DRAM
    bytes (Scan, `--tile-objective=dram`; and naive order) against the I/O lower bound of its
    matrix product, max(compulsory, 2 m n k / sqrt(S)) (Smith et al. 2019), S the buffer's entries.
(k) `fused`: VGG-16's first five convs and two pools (Alwani et al., MICRO 2016) on `edge` with
    the buffer set to each of `--fused-buffers` (362 KiB: the paper's on-chip storage): DRAM
    bytes by role, layer by layer in naive order against fuse-groups under
    `--tile-objective=dram`, beside the chain's compulsory traffic (input, output, weights once).
(m) `kernel`: the `vector` timing model against the FT-M7032's published GEMM figures (Yu et al.,
    IPDPS 2024): one 6 x 48 x k `matmul` on one core (micro-kernel efficiency at k = 64, 512, 1024),
    compiled single-core GEMMs (published 92-96 %), the library's own schedule replayed at the
    paper's three blockings (compiler/library_gemm.py; published 92 / 94 / 96 % on one core) and
    on 1, 2 and 4 cores, and a compiled small-k GEMM on 1, 2 and 4 cores.
(n) `train` (only with `--only train`): one VGG-16 training step on `vector` (`nncc --train`,
    batch `--train-batch`): per conv layer and phase (forward, backward-data, backward-filter)
    the MAC efficiency and the roofline bound, and the same for the classifier trained alone at
    `--train-fc-batch`, beside the paper's (conv 69.63 %, FC 81.98 %); with `--train-resnet`, the
    compile and simulation time of one ResNet-50 step (batch `--train-resnet-batch`). With
    `--train-layers`, instead of the whole step: each VGG-16 conv shape and ResNet-50's 1x1
    convs at their size for `--train-resolution`, each trained alone, and the classifier
    (minutes instead of the whole step's half hour).

Every figure comes from the interpreter running the compiled program; the cost model's
prediction is shown beside the simulated cycles. Plain-text tables, standard library only.
"""

from __future__ import annotations

import json
import math
import os
import sys
import tempfile
import time
from pathlib import Path

import numpy as np
import onnx
from onnx import TensorProto, helper, numpy_helper

from nncc.compiler.library_gemm import PAPER_BLOCKINGS, PAPER_GFLOPS, PAPER_PEAK_GFLOPS, library_gemm_program
from nncc.compiler.zoo import check_name
from nncc.support.command_line import ArgumentParser, add_common_options, available_cpus
from nncc.support.errors import NnccError, report_errors
from nncc.support.user_files import UserFiles

PAPER_VGG = {"conv": 86.62, "fc": 93.17}  # Chen, Li, Liu 2024, inference MAC efficiency (%)
PAPER_KERNEL = {64: 92.0, 512: 98.9, 1024: 99.5}  # Yu et al. 2024, 6x3-vector micro-kernel efficiency (%)
PAPER_GEMM_SINGLE_CORE = (92.0, 96.0)  # Yu et al. 2024, single-core GEMM efficiency range (%)
KERNEL_GEMMS = ((512, 512, 512), (1024, 1024, 1024), (2048, 2048, 256))  # single-core sweep: M, N, K
SCALING_GEMM = (1536, 1536, 32)  # M, N, small K: multi-core scaling
LIBRARY_GEMM = (1008, 1536, 1024)  # M, N, K of the library-schedule replay (divisible by every blocking)
PUBLISHED_KERNEL = ("core.main.vector_registers=24",)  # 6 v + 2 v <= 24: calls of at most 6 x 3 vectors
PAPER_SCAN = {"mobilenet_v2": 67.0, "resnet50 (CP)": 20.0}  # Wu 2019, DRAM energy saving (%)
GOALS = {"conv": 90.0, "fc": 95.0, "roofline": 90.0, "compile_s": 15.0, "sim_s": 30.0}
TARGETS = ("vector", "fusion", "edge")


# --------------------------------------------------------------------------- helpers


def table(headers: list[str], rows: list[list], title: str = "") -> str:
    """A plain-text table: numbers right-aligned, text left-aligned."""
    cells = [[format_cell(c) for c in row] for row in rows]
    widths = [max(len(h), *(len(r[i]) for r in cells)) if cells else len(h) for i, h in enumerate(headers)]
    numeric = [all(isinstance(r[i], (int, float)) for r in rows if r[i] is not None and r[i] != "") for i in
               range(len(headers))]

    def line(values):
        return "  ".join(v.rjust(w) if num else v.ljust(w) for v, w, num in zip(values, widths, numeric)).rstrip()

    out = [title] if title else []
    out += [line(headers), line(["-" * w for w in widths])]
    out += [line(r) for r in cells]
    return "\n".join(out)


def format_cell(value) -> str:
    if value is None:
        return ""
    if isinstance(value, float):
        return f"{value:.1f}" if abs(value) >= 10 or value == 0 else f"{value:.2f}"
    if isinstance(value, int):
        return f"{value:,}"
    return str(value)


def compile_fused(model: onnx.ModelProto, workdir: Path, name: str):
    from nncc.compiler.pipeline import Options, compile_model
    from nncc.compiler.registry import Registry

    path = workdir / f"{name}.onnx"
    onnx.save(model, str(path))
    return compile_model(path, Registry.default(), Options(), until="fused")


def lower_and_run(compilation, target_name: str, tile_order: str = "scan", objective: str = "cycles", disabled=(),
                  **lowering):
    """A copy of the fused `compilation` through the back end's passes as `nncc --target` runs them
    (`lowering`: lower-to-isa's other options, e.g. compare_orders=True), then simulated."""
    from nncc.runtime.interpreter import run

    program = back_end(compilation, target_name, tile_order, objective, disabled, **lowering)
    result = run(program)
    plot_run(f"{compilation.model_path.stem}-{target_name}-{tile_order}" + ("-dram" if objective == "dram" else ""),
             result)
    return program, result


def back_end(compilation, target_name: str, tile_order: str = "scan", objective: str = "cycles", disabled=(),
             **lowering):
    """The program of a fused-stage compilation, compiled on through the pass manager (without
    the `disabled` passes)."""
    from nncc.compiler.codegen.isa_module import module_to_program
    from nncc.compiler.pipeline import Options, compile_further
    from nncc.compiler.registry import Registry

    options = Options(target_options=target_options(target_name, tile_order, objective, **lowering),
                      disabled=set(disabled))
    lowered = compile_further(compilation, Registry.default(), options, after="fused", until="isa")
    return module_to_program(lowered.module, lowered.store)


def target_options(target_name: str, tile_order: str = "scan", objective: str = "cycles", **lowering) -> dict:
    """The back-end passes' options, as nncc's command line gives them (`pipeline.with_target_options`)."""
    return {"target": target_name, "target_set": (), "tile_order": tile_order, "tile_objective": objective,
            "search_workers": available_cpus(), **lowering}


def roles(result) -> dict[str, int]:
    """DRAM bytes (read + written) by role: input, weight, output, intermediate."""
    return {role: read + written for role, (read, written) in result.dram.role_bytes.items()}


def cpu_seconds() -> float:
    """User + system CPU seconds of this process and of its children waited for (the tile search's workers)."""
    times = os.times()
    return times.user + times.system + times.children_user + times.children_system


def node_info(model: onnx.ModelProto) -> dict[str, tuple[str, int]]:
    """ONNX node name -> (op type, bytes its inputs, weights and outputs occupy once)."""
    from nncc.compiler.zoo import tensor_shapes

    shapes = tensor_shapes(model)
    info = {}
    for node in model.graph.node:
        nbytes = sum(4 * math.prod(shapes.get(t, ())) for t in (*node.input, *node.output) if t in shapes)
        info[node.name] = (node.op_type, nbytes)
    return info


def compute_rows(program, result, model: onnx.ModelProto) -> list[dict]:
    """Per conv/FC layer: simulated and predicted cycles, efficiency, roofline bound."""
    target = program.target
    info = node_info(model)
    predictions = getattr(program, "predictions", {})
    rows = []
    for index, layer in enumerate(result.layers):
        kinds = [info[n][0] for n in layer.onnx_nodes if n in info]
        kind = "conv" if "Conv" in kinds else "fc" if ("Gemm" in kinds or "MatMul" in kinds) else None
        if kind is None or not layer.macs or not layer.cycles:
            continue
        # the compute node's tensors once, plus a fused residual (Add) read once
        compute_node = next(n for n in layer.onnx_nodes if info.get(n, ("",))[0] in ("Conv", "Gemm", "MatMul"))
        min_bytes = info[compute_node][1]
        if "Add" in kinds:
            output = next(o for node in model.graph.node if node.name == compute_node for o in node.output)
            min_bytes += 4 * math.prod(shape_of(model, output))
        bound = max(layer.macs / target.mac_units, min_bytes / target.dram_bytes_per_cycle)
        prediction = predictions.get(index, {})
        rows.append({
            "name": layer.name, "node": compute_node, "kind": kind, "macs": layer.macs, "cycles": layer.cycles,
            "predicted_cycles": prediction.get("predicted_cycles"),
            "efficiency": 100 * layer.macs / (layer.cycles * target.mac_units),
            "bound_cycles": int(bound), "bound": "compute" if layer.macs / target.mac_units >= min_bytes /
            target.dram_bytes_per_cycle else "DRAM",
            "bound_efficiency": 100 * layer.macs / (bound * target.mac_units),
            "of_bound": 100 * bound / layer.cycles,
            "dram_bytes": layer.dram_read_bytes + layer.dram_write_bytes,
        })
    return rows


_SHAPES: dict[int, dict] = {}


def shape_of(model: onnx.ModelProto, tensor: str) -> tuple[int, ...]:
    from nncc.compiler.zoo import tensor_shapes

    if id(model) not in _SHAPES:
        _SHAPES[id(model)] = tensor_shapes(model)
    return _SHAPES[id(model)].get(tensor, ())


def classifier_model(batch: int, in_features: int, seed: int = 0) -> onnx.ModelProto:
    """VGG-16's classifier alone (FC 4096, ReLU, FC 4096, ReLU, FC 1000; dropout is identity)."""
    rng = np.random.default_rng(seed)
    sizes = [in_features, 4096, 4096, 1000]
    nodes, inits, shapes = [], [], []
    x = "input"
    for i, (k, n) in enumerate(zip(sizes, sizes[1:])):
        w = (rng.standard_normal((n, k), dtype=np.float32) * np.float32(math.sqrt(2.0 / k)))
        b = np.zeros(n, np.float32)
        inits += [helper.make_tensor(f"fc{i}.weight", TensorProto.FLOAT, w.shape, w.tobytes(), raw=True),
                  helper.make_tensor(f"fc{i}.bias", TensorProto.FLOAT, b.shape, b.tobytes(), raw=True)]
        y = f"fc{i}" if i < 2 else "logits"
        nodes.append(helper.make_node("Gemm", [x, f"fc{i}.weight", f"fc{i}.bias"], [y], name=f"classifier.fc{i}",
                                      transB=1))
        if i < 2:
            nodes.append(helper.make_node("Relu", [y], [f"{y}.relu"], name=f"classifier.relu{i}"))
            shapes += [helper.make_tensor_value_info(name, TensorProto.FLOAT, [batch, n])
                       for name in (y, f"{y}.relu")]
            y = f"{y}.relu"
        x = y
    graph = helper.make_graph(nodes, "vgg16_classifier",
                              [helper.make_tensor_value_info("input", TensorProto.FLOAT, [batch, in_features])],
                              [helper.make_tensor_value_info("logits", TensorProto.FLOAT, [batch, 1000])], inits,
                              value_info=shapes)  # written out: shape inference would copy the 500 MB of weights
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)])
    model.ir_version = 9
    return model


def average(values) -> float | None:
    values = list(values)
    return sum(values) / len(values) if values else None


PLOTS: dict = {}
"""--plot: the folder, stem and suffix of the figures, the part running, and the files written."""


def plot_run(label: str, result) -> None:
    """With --plot: the run's per-layer roofline and bars, in FILE-stem.PART-LABEL.suffix."""
    if not PLOTS:
        return
    from nncc.compiler.plots import layer_figure
    from nncc.runtime.report import build_report
    from nncc.runtime.target import target_to_dict

    report = {**build_report(result), "target_description": target_to_dict(result.program.target)}
    path = PLOTS["folder"] / f"{PLOTS['stem']}.{PLOTS['part']}-{label}{PLOTS['suffix']}"
    layer_figure(report, path, title=f"({PLOTS['part']}) {label}: {result.cycles:,} cycles, "
                                     f"{result.mac_utilization:.1%} MAC utilisation")
    PLOTS["written"].append(path)


# --------------------------------------------------------------------------- (a) VGG-16 on vector


def bench_vgg(args, workdir: Path) -> dict:
    from nncc.compiler.zoo import build_model
    from nncc.runtime.target import load_target

    target = load_target("vector", args.target_set)
    out: dict = {"target": "vector", "target_set": args.target_set, "batch": args.batch, "fc_batch": args.fc_batch,
                 "resolution": args.resolution}
    t0 = time.time()
    model = build_model("vgg16", batch=args.batch, resolution=args.resolution)
    compilation = compile_fused(model, workdir, "vgg16")
    program, result = lower_and_run(compilation, target.name, target_set=tuple(args.target_set))
    rows = [r for r in compute_rows(program, result, model) if r["kind"] == "conv"]
    del compilation, program, result
    in_features = 512 * (args.resolution // 32) ** 2
    fc_model = classifier_model(args.fc_batch, in_features)
    fc_compilation = compile_fused(fc_model, workdir, "vgg16_classifier")
    fc_program, fc_result = lower_and_run(fc_compilation, target.name, target_set=tuple(args.target_set))
    fc_rows = compute_rows(fc_program, fc_result, fc_model)
    del fc_model, fc_compilation, fc_program, fc_result
    fc1_model = classifier_model(1, in_features)  # batch 1: DRAM-bound, for the roofline column
    fc1_program, fc1_result = lower_and_run(compile_fused(fc1_model, workdir, "vgg16_classifier_b1"), target.name,
                                            target_set=tuple(args.target_set))
    fc1_rows = compute_rows(fc1_program, fc1_result, fc1_model)
    out["seconds"] = time.time() - t0
    out["conv"], out["fc"], out["fc_batch1"] = rows, fc_rows, fc1_rows
    macs = sum(r["macs"] for r in rows)
    out["conv_average"] = average(r["efficiency"] for r in rows)
    out["conv_overall"] = 100 * macs / (sum(r["cycles"] for r in rows) * target.mac_units)
    out["fc_average"] = average(r["efficiency"] for r in fc_rows)
    out["min_of_bound"] = min(r["of_bound"] for r in rows + fc_rows + fc1_rows)
    headers = ["layer", "ONNX node", "GMAC", "cycles", "predicted", "MAC eff %", "bound", "bound eff %",
               "% of bound"]

    def render(rs):
        return [[r["name"], r["node"], r["macs"] / 1e9, r["cycles"], r["predicted_cycles"], r["efficiency"],
                 r["bound"], r["bound_efficiency"], r["of_bound"]] for r in rs]

    print(table(headers, render(rows),
                f"(a) VGG-16 inference on vector ({target.cores} cores x {target.main.macs_per_cycle} MAC/cycle, "
                f"DRAM {target.dram_bytes_per_cycle:.1f} B/cycle), conv layers, batch {args.batch}, "
                f"{args.resolution}x{args.resolution}"))
    print()
    print(table(headers, render(fc_rows), f"    FC layers, batch {args.fc_batch}"))
    print()
    print(table(headers, render(fc1_rows), "    FC layers, batch 1 (DRAM-bound: efficiency is set by the weights' "
                                           "bytes; see % of bound)"))
    print()
    summary = [
        ["conv, average over layers", out["conv_average"], PAPER_VGG["conv"], GOALS["conv"]],
        ["conv, all conv MACs / all conv cycles", out["conv_overall"], None, None],
        [f"FC, average over layers (batch {args.fc_batch})", out["fc_average"], PAPER_VGG["fc"], GOALS["fc"]],
        ["lowest % of roofline bound (any layer above)", out["min_of_bound"], None, GOALS["roofline"]],
    ]
    print(table(["MAC efficiency (%)", "nncc", "paper", "goal"], summary))
    if args.width:
        out["width"] = width_mapping_rows(target, args, rows)
        print()
        print(table(["layer", "channels mapping %", "width mapping forced %", "width tiles (toc, tic, toh, tow)"],
                    [[r["name"], r["channels"], r["width"], r["tiles"]] for r in out["width"]],
                    "    the width mapping (weights broadcast, output columns on the lanes) forced on every conv: "
                    "its best tiling's timed schedule (the cost model, equal to the simulation)"))
    return out


VGG16_CONVS = ((0, 3, 64, 1), (2, 64, 64, 1), (5, 64, 128, 2), (7, 128, 128, 2), (10, 128, 256, 4),
               (12, 256, 256, 4), (14, 256, 256, 4), (17, 256, 512, 8), (19, 512, 512, 8), (21, 512, 512, 8),
               (24, 512, 512, 16), (26, 512, 512, 16), (28, 512, 512, 16))
"""VGG-16's 3x3 convs: layer index in `features`, input and output channels, downscaling of the input."""


def width_mapping_rows(target, args, rows: list[dict]) -> list[dict]:
    """Per VGG-16 conv: the efficiency of the width mapping's best tiling (`conv_width.choose_width_tiles`,
    its schedule timed by the cost model) beside the simulated layer (a fused chain's row for a conv
    in a chain)."""
    from nncc.compiler.codegen.context import Lowering
    from nncc.compiler.codegen.conv import ConvShape
    from nncc.compiler.codegen.conv_width import choose_width_tiles
    from nncc.runtime.program import Program

    lowering = Lowering(target, Program(target, []), None)
    lowering.layer_cores = target.cores
    out = []
    for index, c, o, down in VGG16_CONVS:
        name = f"features.{index}"
        row = next((r for r in rows if name in r["name"].split("+")), None)
        size = args.resolution // down
        shape = ConvShape(args.batch, c, size, size, o, 3, 3, size, size, (1, 1), (1, 1, 1, 1), (1, 1), 1)
        macs = args.batch * o * size * size * c * 9
        found = choose_width_tiles(lowering, shape, bias=True)
        width = None if found is None else 100 * macs / (found[1].cycles * target.mac_units)
        tiles = "" if found is None else f"{found[0].toc}, {found[0].tic}, {found[0].toh}, {found[0].tow}"
        out.append({"name": name if row is None or row["name"] == name else f"{name} (in {row['name']})",
                    "channels": None if row is None else row["efficiency"], "width": width, "tiles": tiles})
    return out


# --------------------------------------------------------------------------- (b) scan vs naive on edge


def bench_scan(args, workdir: Path) -> dict:
    from nncc.compiler.zoo import build_model
    from nncc.runtime.target import load_target

    target = load_target("edge")
    out: dict = {"target": "edge", "resolution": args.scan_resolution, "models": {}}
    for name in ("mobilenet_v2", "resnet50"):
        model = build_model(name, batch=1, resolution=args.scan_resolution)
        compilation = compile_fused(model, workdir, name)
        runs = {order: lower_and_run(compilation, target.name, order, compare_orders=order == "tsp")
                for order in ("naive", "scan", "tsp")}
        layers = []
        tsp_program = runs["tsp"][0]
        for index, (naive, scan, tsp) in enumerate(zip(*(runs[order][1].layers for order in ("naive", "scan", "tsp")))):
            compared = tsp_program.predictions.get(index, {})  # Scan's tiles in naive and serpentine order, the search time
            layers.append({"name": naive.name, "node": naive.onnx_nodes[0] if naive.onnx_nodes else "",
                           "naive": naive.dram_read_bytes + naive.dram_write_bytes,
                           "scan": scan.dram_read_bytes + scan.dram_write_bytes,
                           "tsp": tsp.dram_read_bytes + tsp.dram_write_bytes,
                           "scan_tiles_naive": compared.get("predicted_dram_bytes_naive_order"),
                           "scan_tiles_serpentine": compared.get("predicted_dram_bytes_serpentine_order"),
                           "tsp_search_ms": compared.get("tsp_search_ms"),
                           "naive_cycles": naive.cycles, "scan_cycles": scan.cycles, "tsp_cycles": tsp.cycles})
        entry = order_totals({order: r for order, (_, r) in runs.items()})
        totals, energy, cycles = entry["total_bytes"], entry["dram_energy_pj"], entry["cycles"]
        entry.update({"layers": layers, "saving_bytes": 100 * (1 - totals["scan"] / totals["naive"]),
                      "saving_energy": 100 * (1 - energy["scan"] / energy["naive"]),
                      "tsp_saving_bytes": 100 * (1 - totals["tsp"] / totals["naive"]),
                      "tsp_search_ms": sum(x["tsp_search_ms"] or 0 for x in layers)})
        out["models"][name] = entry
        changed = [[x["name"], x["node"], x["naive"], x["scan"], x["tsp"], 100 * (1 - x["scan"] / x["naive"]),
                    100 * (1 - x["tsp"] / x["naive"]), x["tsp_search_ms"] if x["tsp_search_ms"] is not None else ""]
                   for x in layers if len({x["naive"], x["scan"], x["tsp"]}) > 1]
        print(table(["layer", "ONNX node", "naive bytes", "scan bytes", "tsp bytes", "scan saving %", "tsp saving %",
                     "tsp search ms"], changed,
                    f"(b) {name} on edge, {args.scan_resolution}x{args.scan_resolution}: DRAM bytes (read + write) "
                    f"per layer, layers where the order matters ({len(changed)} of {len(layers)})"))
        print(table(["total", "naive", "scan", "tsp", "scan saving %", "tsp saving %"], [
            ["DRAM bytes", totals["naive"], totals["scan"], totals["tsp"], entry["saving_bytes"], entry["tsp_saving_bytes"]],
            ["DRAM energy (uJ)", energy["naive"] / 1e6, energy["scan"] / 1e6, energy["tsp"] / 1e6, entry["saving_energy"],
             100 * (1 - energy["tsp"] / energy["naive"])],
            ["cycles", cycles["naive"], cycles["scan"], cycles["tsp"], 100 * (1 - cycles["scan"] / cycles["naive"]),
             100 * (1 - cycles["tsp"] / cycles["naive"])],
        ]))
        print(f"tsp path search: {entry['tsp_search_ms'] / 1000:.2f} s CPU over the model's conv/gemm layers")
        entry["dram_objective"] = dram_objective_totals(compilation, target.name)
        d = entry["dram_objective"]
        print(table(["--tile-objective=dram", "naive", "scan", "vs cycles objective, scan"], [
            ["DRAM bytes", d["total_bytes"]["naive"], d["total_bytes"]["scan"],
             f"{100 * (d['total_bytes']['scan'] / totals['scan'] - 1):+.1f} %"],
            ["DRAM energy (uJ)", d["dram_energy_pj"]["naive"] / 1e6, d["dram_energy_pj"]["scan"] / 1e6,
             f"{100 * (d['dram_energy_pj']['scan'] / energy['scan'] - 1):+.1f} %"],
            ["cycles", d["cycles"]["naive"], d["cycles"]["scan"], f"{100 * (d['cycles']['scan'] / cycles['scan'] - 1):+.1f} %"],
        ]))
        print()
        del compilation, runs
    return out


def dram_objective_totals(compilation, target_name: str) -> dict:
    """Both orders again with tiles chosen for the fewest DRAM bytes (`--tile-objective=dram`)."""
    return order_totals({order: lower_and_run(compilation, target_name, order, "dram")[1]
                         for order in ("naive", "scan")})


def order_totals(results: dict) -> dict:
    """DRAM bytes, DRAM energy and cycles of each tile order's run."""
    return {"total_bytes": {o: int(r.read_bytes.get("DRAM", 0) + r.write_bytes.get("DRAM", 0)) for o, r in results.items()},
            "dram_energy_pj": {o: r.energy_pj["dram"] for o, r in results.items()},
            "cycles": {o: r.cycles for o, r in results.items()}}


# --------------------------------------------------------------------------- (c) ResNet-50 times


def bench_resnet(args, workdir: Path) -> dict:
    from nncc.compiler.codegen.isa_module import module_to_program
    from nncc.compiler.pass_manager import built
    from nncc.compiler.pipeline import Options, compile_model
    from nncc.compiler.registry import Registry
    from nncc.compiler.zoo import build_model
    from nncc.runtime.interpreter import run
    from nncc.runtime.target import load_target

    out: dict = {"resolution": args.resnet_resolution, "targets": {}}
    path = workdir / "resnet50.onnx"
    onnx.save(build_model("resnet50", batch=1, resolution=args.resnet_resolution), str(path))
    rows = []
    for target_name in args.resnet_targets:
        load_target(target_name)
        options = Options(target_options=target_options(target_name))
        t0, c0 = time.time(), cpu_seconds()  # what `nncc MODEL --target=T` does: every pass, isa ops unbuilt
        compilation = compile_model(path, Registry.default(), options, until="isa")
        program = module_to_program(compilation.module, compilation.store)
        compile_s, compile_cpu_s = time.time() - t0, cpu_seconds() - c0  # CPU: the same on a busy machine
        t0 = time.time()  # the isa ops built (--emit=isa, --print-ir-*) and read back, for comparison
        built(compilation.module)
        via_ir = module_to_program(compilation.module, compilation.store)
        ir_compile_s = compile_s + time.time() - t0
        assert via_ir.instructions == program.instructions
        t1 = time.time()
        result = run(program)
        sim_s = time.time() - t1
        plot_run(f"resnet50-{target_name}", result)
        entry = {"compile_s": compile_s, "compile_cpu_s": compile_cpu_s, "ir_compile_s": ir_compile_s, "sim_s": sim_s,
                 "instructions": len(program.instructions),
                 "cycles": result.cycles, "mac_utilization": 100 * result.mac_utilization}
        out["targets"][target_name] = entry
        rows.append([target_name, compile_s, compile_cpu_s, ir_compile_s, sim_s, len(program.instructions),
                     result.cycles, entry["mac_utilization"]])
        del compilation, program, via_ir, result
    print(table(["target", "compile s", "compile CPU s", "via isa IR s", "simulate s", "instructions", "cycles",
                 "MAC util %"], rows,
                f"(c) ResNet-50, batch 1, {args.resnet_resolution}x{args.resnet_resolution}: compile (ONNX -> isa "
                f"program) and simulation wall time (goals < {GOALS['compile_s']:.0f} s and < {GOALS['sim_s']:.0f} s); "
                "compile CPU s: user + sys of the compile, what a busy machine does not inflate"))
    return out


# --------------------------------------------------------------------------- (d) the zoo, checked


def bench_zoo(args, workdir: Path) -> dict:
    """Every zoo model on every preset target, run on the interpreter and held to onnxruntime
    (what `nncc MODEL --target=T --check` does), with seeded random inputs."""
    from nncc.compiler.codegen.isa_module import module_to_program
    from nncc.compiler.pipeline import Options, compile_model
    from nncc.compiler.registry import Registry
    from nncc.compiler.zoo import MODELS, build_model
    from nncc.runtime.interpreter import run
    from nncc.support import check

    out: dict = {"resolution": args.zoo_resolution, "models": {}}
    rows = []
    for name in args.zoo_models or MODELS:
        path = workdir / f"{name}.onnx"
        onnx.save(build_model(name, batch=1, resolution=args.zoo_resolution), str(path))
        out["models"][name] = {}
        for target_name in TARGETS:
            options = Options(target_options=target_options(target_name))
            t0 = time.time()
            compilation = compile_model(path, Registry.default(), options, until="isa")
            program = module_to_program(compilation.module, compilation.store)
            compile_s = time.time() - t0
            inputs = check.random_inputs({s.name: s.shape for s in program.symbols_of("input")}, seed=0)
            t0 = time.time()
            result = run(program, inputs)
            sim_s = time.time() - t0
            plot_run(f"{name}-{target_name}", result)
            summary = check.check_summary(check.compare(result.outputs, check.run_onnxruntime(path, inputs)))
            entry = {"compile_s": compile_s, "sim_s": sim_s, "cycles": result.cycles,
                     "mac_utilization": 100 * result.mac_utilization, "passed": summary["passed"],
                     "max_rel_err": summary["max_rel_err"]}
            out["models"][name][target_name] = entry
            rows.append([name, target_name, compile_s, sim_s, result.cycles, entry["mac_utilization"],
                         f"{summary['max_rel_err']:.1e}", "yes" if summary["passed"] else "NO"])
            del compilation, program, result
    out["all_passed"] = all(e["passed"] for m in out["models"].values() for e in m.values())
    print(table(["model", "target", "compile s", "simulate s", "cycles", "MAC util %", "max err / scale", "check"],
                rows, f"(d) the zoo, batch 1, {args.zoo_resolution}x{args.zoo_resolution}, on every target, against "
                      f"onnxruntime (tolerance 1e-4 x output scale)"))
    return out


# --------------------------------------------------------------------------- (j) BatchNorm/ReLU fused in training


PAPER_BN = {"resnet50": (67.7, 77.6), "densenet121": 25.7}  # Yang et al. 2023 fwd/bwd %, Jung et al. 2019 step %
GOALS_BN = {"resnet50": (70.0, 80.0), "densenet121": 30.0}
BN_PASS = "fuse-batch-norm-training"


def training_report(model: Path, workdir: Path, fused: bool, batch: int) -> tuple[dict, float]:
    """One training step on `fusion` as `nncc MODEL --train --target=fusion` runs it (fused, or with
    `--disable-pass=fuse-batch-norm-training`): its report and the CPU seconds it took."""
    from nncc.compiler.cli import main as nncc_main

    report = workdir / f"{model.stem}.{'fused' if fused else 'unfused'}.json"
    flags = [] if fused else [f"--disable-pass={BN_PASS}"]
    start = cpu_seconds()
    code = nncc_main([str(model), "--train", "--target=fusion", "--batch", str(batch), "--quiet",
                      "--program", str(workdir / f"{model.stem}.{fused}"), "--report", str(report), *flags])
    if code != 0:
        raise NnccError(f"nncc-bench: training step of {model.name} failed (exit {code})")
    return json.loads(report.read_text()), cpu_seconds() - start


def bn_relu_nodes(model: onnx.ModelProto) -> set[str]:
    return {node.name for node in model.graph.node if node.op_type in ("BatchNormalization", "Relu")}


def is_bn_relu_layer(row: dict, nodes: set[str]) -> bool:
    """A layer that is BatchNorm/ReLU work of its own (its ONNX nodes all BatchNorm or ReLU, or one
    of the fused BatchNorm ops); convs with pre/post-processing are not."""
    if row["op"].startswith("fused.batch_norm"):
        return True
    return bool(row["onnx_nodes"]) and set(row["onnx_nodes"]) <= nodes and not row["op"].startswith("fused.conv2d")


def bn_summary(report: dict, nodes: set[str]) -> dict:
    rows = [r for r in report["layers"] if is_bn_relu_layer(r, nodes)]
    by_phase = {phase: sum(r["dram_read_bytes"] + r["dram_write_bytes"] for r in rows if r["phase"] == phase)
                for phase in ("forward", "backward")}
    return {"cycles": {p: v["cycles"] for p, v in report["phases"].items()}, "total_cycles": report["cycles"],
            "bn_relu_layers": len(rows), "bn_relu_dram_bytes": by_phase,
            "bn_relu_cycles": sum(r["cycles"] for r in rows),
            "dram_bytes": report["dram"]["read_bytes"] + report["dram"]["write_bytes"],
            "energy_uj": report["energy_pj"]["total"] / 1e6, "dram_energy_uj": report["energy_pj"]["dram"] / 1e6,
            "rows": [{k: r[k] for k in ("name", "op", "phase", "cycles", "dram_read_bytes", "dram_write_bytes")}
                     for r in rows]}


def speedup(before: float, after: float) -> float:
    return 100.0 * (before / after - 1.0)


def bench_bn(args, workdir: Path) -> dict:
    """ResNet-50 and DenseNet-121, one training step on `fusion` at `--bn-batch`, with and without
    `fuse-batch-norm-training`: cycles per phase and the speed-ups beside the papers', DRAM bytes
    and cycles of the BatchNorm/ReLU layers of their own, total DRAM bytes and energy."""
    from nncc.compiler.zoo import build_model

    out: dict = {"batch": args.bn_batch, "models": {}}
    rows, bn_rows = [], []
    sizes = {"resnet50": args.bn_resolution, "densenet121": args.bn_dense_resolution}
    for name in args.bn_models:
        resolution = sizes.get(name, args.bn_resolution)
        model = build_model(name, batch=args.bn_batch, resolution=resolution)
        path = workdir / f"{name}.onnx"
        onnx.save(model, str(path))
        nodes = bn_relu_nodes(model)
        runs = {}
        for fused in (False, True):
            report, cpu = training_report(path, workdir, fused, args.bn_batch)
            runs["fused" if fused else "unfused"] = {**bn_summary(report, nodes), "cpu_s": cpu}
        u, f = runs["unfused"], runs["fused"]
        gains = {phase: speedup(u["cycles"][phase], f["cycles"][phase]) for phase in ("forward", "backward")}
        gains["step"] = speedup(u["total_cycles"], f["total_cycles"])
        out["models"][name] = {"resolution": resolution, **runs, "speedup_percent": gains}
        for label, run in runs.items():
            rows.append([name, resolution, label, run["cycles"]["forward"], run["cycles"]["backward"],
                         run["cycles"]["update"], run["total_cycles"], run["dram_bytes"] / 1e6, run["energy_uj"],
                         run["cpu_s"]])
            bn_rows.append([name, label, run["bn_relu_layers"], run["bn_relu_cycles"],
                            run["bn_relu_dram_bytes"]["forward"] / 1e6, run["bn_relu_dram_bytes"]["backward"] / 1e6])
        if name not in PAPER_BN:
            continue
        paper = PAPER_BN[name]
        goal = GOALS_BN[name]
        rows.append([name, "", "speed-up %", gains["forward"], gains["backward"], "", gains["step"], "", "", ""])
        rows.append([name, "", "paper %", *(paper if isinstance(paper, tuple) else ("", "")), "",
                     "" if isinstance(paper, tuple) else paper, "", "", ""])
        rows.append([name, "", "goal %", *(goal if isinstance(goal, tuple) else ("", "")), "",
                     "" if isinstance(goal, tuple) else goal, "", "", ""])
    print(table(["model", "size", "run", "forward", "backward", "update", "step cycles", "DRAM MB", "energy uJ",
                 "CPU s"], rows,
                f"(j) one training step on fusion, batch {args.bn_batch}, BatchNorm/ReLU fused "
                f"({BN_PASS}) vs unfused (--disable-pass); cycles per phase"))
    print(table(["model", "run", "BN/ReLU layers", "their cycles", "their DRAM MB fwd", "bwd"], bn_rows,
                "(j) BatchNorm/ReLU work in layers of its own (the fused convs' pre/post-processing is inside "
                "the convs' rows)"))
    if args.bn_plot:
        phase_figure(out, args.bn_plot)
        print(f"nncc-bench: {args.bn_plot}")
    return out


def phase_figure(out: dict, path: Path) -> None:
    """Bars of cycles per phase, unfused vs fused, one panel per model."""
    from nncc.compiler.plots import new_figure, save

    models = list(out["models"])
    figure = new_figure(5.0 * len(models), 3.6)
    for index, name in enumerate(models):
        axes = figure.add_subplot(1, len(models), index + 1)
        runs = out["models"][name]
        phases = ["forward", "backward", "update"]
        for offset, label, color in ((-0.2, "unfused", "#b0b0b0"), (0.2, "fused", "#3b75af")):
            values = [runs[label]["cycles"][p] / 1e6 for p in phases]
            axes.bar([i + offset for i in range(len(phases))], values, width=0.4, label=label, color=color)
        axes.set_xticks(range(len(phases)), phases)
        axes.set_ylabel("Mcycles")
        gains = runs["speedup_percent"]
        axes.set_title(f"{name} {runs['resolution']}x{runs['resolution']}, batch {out['batch']}: "
                       f"fwd {gains['forward']:+.0f} %, bwd {gains['backward']:+.0f} %, step {gains['step']:+.0f} %",
                       fontsize=9)
        axes.legend(fontsize=8)
    save(figure, path)
# --------------------------------------------------------------------------- (k) fused conv chains


FEATURE_MAPS = ("input", "output", "intermediate")


def bench_fused(args, workdir: Path) -> dict:
    """VGG-16's first five convs on `edge` at each buffer size: layer by layer (naive order) against
    fuse-groups (`--tile-objective=dram`), DRAM bytes by role beside the compulsory traffic."""
    from nncc.compiler.zoo import build_vgg16_head
    from nncc.runtime.interpreter import run

    model = build_vgg16_head(args.fused_resolution)
    compilation = compile_fused(model, workdir, "vgg16_head")
    shapes = {i.name: [d.dim_value for d in i.type.tensor_type.shape.dim] for i in model.graph.input}
    outputs = [[d.dim_value for d in o.type.tensor_type.shape.dim] for o in model.graph.output]
    weights = sum(math.prod(t.dims) for t in model.graph.initializer)
    feature_maps = 4 * (sum(math.prod(s) for s in shapes.values()) + sum(math.prod(s) for s in outputs))
    compulsory = feature_maps + 4 * weights
    out: dict = {"resolution": args.fused_resolution, "compulsory_bytes": compulsory,
                 "compulsory_feature_map_bytes": feature_maps, "buffers": {}}
    rows = []
    for size in args.fused_buffers:
        entry = {}
        for label, order, objective, disabled in (("layers", "naive", "cycles", ("fuse-groups",)),
                                                  ("fused", "scan", "dram", ())):
            start = cpu_seconds()
            program = back_end(compilation, "edge", order, objective, disabled,
                               target_set=(f"memory.BUF.size_bytes={size}",))
            compile_s = cpu_seconds() - start
            result = run(program)
            by_role = roles(result)
            groups = [layer.name for layer in result.layers if layer.op == "fused.group"]
            entry[label] = {"dram_bytes": sum(by_role.values()), "by_role": by_role,
                            "feature_map_bytes": sum(by_role.get(r, 0) for r in FEATURE_MAPS),
                            "dram_energy_pj": result.energy_pj["dram"],
                            "cycles": result.cycles, "groups": groups, "compile_cpu_s": compile_s}
            fm = entry[label]["feature_map_bytes"]
            rows.append([f"{size // 1024} KiB", label, entry[label]["dram_bytes"] / 1e6, fm / 1e6,
                         by_role.get("weight", 0) / 1e6, entry[label]["dram_bytes"] / compulsory, fm / feature_maps,
                         result.cycles, " ".join(groups) or "-"])
        out["buffers"][size] = entry
    print(table(["buffer", "program", "DRAM MB", "feature maps MB", "weights MB", "x compulsory",
                 "feature maps x compulsory", "cycles", "groups"], rows,
                f"(k) VGG-16 conv1_1 .. conv3_1 on edge, {args.fused_resolution}x{args.fused_resolution}: "
                f"compulsory {compulsory / 1e6:.2f} MB ({feature_maps / 1e6:.2f} MB of feature maps); "
                f"Alwani et al.: 77 MB -> 3.6 MB of feature maps with 362 KB on chip (16-bit)"))
    return out


# --------------------------------------------------------------------------- (l) 1x1 layers against the I/O bound


def pointwise_shapes(model: onnx.ModelProto) -> dict[str, tuple[int, int, int]]:
    """ONNX node name of every 1x1 ungrouped conv -> (m pixels, k input channels, n output channels)."""
    from nncc.compiler.zoo import tensor_shapes

    shapes = tensor_shapes(model)
    out = {}
    for node in model.graph.node:
        attrs = {a.name: helper.get_attribute_value(a) for a in node.attribute}
        if node.op_type == "Conv" and list(attrs.get("kernel_shape", [])) == [1, 1] and attrs.get("group", 1) == 1:
            n, k, h, w = shapes[node.input[0]]
            out[node.name] = (n * h * w, k, shapes[node.output[0]][1])
    return out


def bench_bound(args, workdir: Path) -> dict:
    """MobileNetV2's 1x1 layers on edge against the I/O lower bound of their matrix products."""
    from nncc.compiler.zoo import build_model
    from nncc.runtime.target import load_target

    target = load_target("edge")
    entries = target.memory("BUF").size_bytes // 4
    model = build_model("mobilenet_v2", batch=1, resolution=args.scan_resolution)
    compilation = compile_fused(model, workdir, "mobilenet_v2")
    shapes = pointwise_shapes(model)
    runs = {label: lower_and_run(compilation, "edge", order, objective, disabled=("fuse-groups",))[1]
            for label, order, objective in (("naive", "naive", "cycles"), ("dram", "scan", "dram"))}
    rows, out = [], []
    for optimised, naive in zip(runs["dram"].layers, runs["naive"].layers):
        node = next((n for n in optimised.onnx_nodes if n in shapes), None)
        if node is None:
            continue
        m, k, n = shapes[node]
        bound = 4 * max(m * k + k * n + m * n, 2 * m * n * k / math.sqrt(entries))
        moved = optimised.dram_read_bytes + optimised.dram_write_bytes
        layer_by_layer = naive.dram_read_bytes + naive.dram_write_bytes
        out.append({"node": node, "m": m, "k": k, "n": n, "bound_bytes": bound, "dram_bytes": moved,
                    "naive_bytes": layer_by_layer})
        rows.append([node, m, k, n, bound / 1e3, moved / 1e3, moved / bound, layer_by_layer / 1e3])
    print(table(["node", "m", "k", "n", "bound kB", "dram kB", "x bound", "naive kB"], rows,
                f"(l) MobileNetV2 1x1 convs on edge ({entries} entries), {args.scan_resolution}x"
                f"{args.scan_resolution}: DRAM bytes against max(compulsory, 2mnk/sqrt(S))"))
    worst = max(x["dram_bytes"] / x["bound_bytes"] for x in out)
    above = sum(x["dram_bytes"] > x["naive_bytes"] for x in out)
    print(f"worst {worst:.3f}x the bound (goal <= 1.25x); {above} of {len(out)} above their naive layer-by-layer bytes")
    return {"layers": out, "worst": worst, "above_naive": above,
            "single": bench_single_layers(workdir, args.scan_resolution / 224)}


SINGLE_LAYERS = (  # issue 11's single layers: (name, kind, C, K, size, kernel, ZigZag 3.9.1's best x compulsory)
    ("1x1 56x56 24->144", "conv", 24, 144, 56, 1, 1.000),
    ("FC 4096x4096", "fc", 4096, 4096, 1, 1, 1.000),
    ("3x3 56x56 64->64", "conv", 64, 64, 56, 3, 1.258),
    ("depthwise 3x3 112x112x32", "depthwise", 32, 32, 112, 3, 1.036),
)


def single_layer_model(kind: str, c: int, o: int, size: int, kernel: int, seed: int = 0) -> onnx.ModelProto:
    """One layer alone (no bias), fp32, batch 1: a Conv (pad kernel // 2; grouped per channel for
    a depthwise one) or a Gemm."""
    rng = np.random.default_rng(seed)
    if kind == "fc":
        weight = rng.standard_normal((o, c)).astype(np.float32)
        node = helper.make_node("Gemm", ["x", "w"], ["y"], name="layer", transB=1)
        x_shape, y_shape = [1, c], [1, o]
    else:
        group = c if kind == "depthwise" else 1
        weight = rng.standard_normal((o, c // group, kernel, kernel)).astype(np.float32)
        node = helper.make_node("Conv", ["x", "w"], ["y"], name="layer", kernel_shape=[kernel] * 2,
                                pads=[kernel // 2] * 4, group=group)
        x_shape, y_shape = [1, c, size, size], [1, o, size, size]
    graph = helper.make_graph([node], "layer", [helper.make_tensor_value_info("x", TensorProto.FLOAT, x_shape)],
                              [helper.make_tensor_value_info("y", TensorProto.FLOAT, y_shape)],
                              [numpy_helper.from_array(weight, "w")])
    return helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)], ir_version=9)


def bench_single_layers(workdir: Path, scale: float = 1.0) -> list[dict]:
    """Issue 11's single layers on `edge` against their compulsory traffic (input, weights, output
    once), tiled for cycles and for DRAM bytes (Scan), beside ZigZag 3.9.1's best mapping (at
    224: the issue's sizes; smaller `--scan-resolution` scales the images and the FC layer)."""
    rows, out = [], []
    for name, kind, c, o, size, kernel, zigzag in SINGLE_LAYERS:
        if scale != 1.0:
            size, c, o = (max(4, round(size * scale)), c, o) if kind != "fc" else (1, round(c * scale), round(o * scale))
            name = f"{name} (at {size}x{size})" if kind != "fc" else f"FC {c}x{o}"
        model = single_layer_model(kind, c, o, size, kernel)
        pixels = size * size
        compulsory = 4 * (c * pixels + o * pixels + sum(math.prod(i.dims) for i in model.graph.initializer))
        compilation = compile_fused(model, workdir, f"single_{kind}_{c}_{o}_{size}")
        entry = {"layer": name, "compulsory_bytes": compulsory, "zigzag_x": zigzag}
        for objective in ("cycles", "dram"):
            _, result = lower_and_run(compilation, "edge", "scan", objective)
            moved = result.read_bytes.get("DRAM", 0) + result.write_bytes.get("DRAM", 0)
            entry[objective] = {"dram_bytes": int(moved), "cycles": result.cycles, "x": moved / compulsory}
        out.append(entry)
        rows.append([name, compulsory, entry["cycles"]["dram_bytes"], f"{entry['cycles']['x']:.3f}",
                     entry["cycles"]["cycles"], entry["dram"]["dram_bytes"], f"{entry['dram']['x']:.3f}",
                     entry["dram"]["cycles"], f"{zigzag:.3f}"])
    print(table(["layer", "compulsory B", "DRAM B (cycles)", "x", "cycles", "DRAM B (dram objective)", "x",
                 "cycles", "ZigZag x"], rows,
                "(l) single layers on edge (64K entries) against their compulsory traffic"))
    return out


# --------------------------------------------------------------------------- (n) training on vector

PAPER_TRAIN = {"conv": 69.63, "fc": 81.98}  # Chen, Li, Liu 2024, VGG training MAC efficiency (%)
GOALS_TRAIN = {"conv": 80.0, "fc": 90.0, "resnet_sim_s": 60.0}
TRAIN_PHASES = {"nn.conv2d_backward_data": "backward-data", "nn.conv2d_backward_filter": "backward-filter"}


def train_step(model: onnx.ModelProto, workdir: Path, name: str, batch: int, *flags: str) -> dict:
    """`nncc NAME.onnx --train --target=vector --batch N --report R` (one SGD step, seeded data): its report."""
    from nncc.compiler.cli import main as nncc_main

    path, report = workdir / f"{name}.onnx", workdir / f"{name}.report.json"
    onnx.save(model, str(path))
    code = nncc_main([str(path), "--train", "--target=vector", "--batch", str(batch), "--report", str(report),
                      "--program", str(workdir / name), *flags])
    if code:
        raise NnccError(f"nncc --train on {name} exited with {code}")
    return json.loads(report.read_text())


def training_phase(row: dict) -> str | None:
    """forward / backward-data / backward-filter of a conv or FC layer's row, else None."""
    if row["phase"] == "forward" and row["op"] in ("nn.conv2d", "fused.conv2d", "nn.gemm", "fused.gemm"):
        return "forward"
    if row["op"] in TRAIN_PHASES:
        return TRAIN_PHASES[row["op"]]
    if row["phase"] == "backward" and row["op"] == "nn.gemm":
        return {"a": "backward-data", "b": "backward-filter"}.get(row["name"].rpartition("_grad_")[2])
    return None


def training_rows(report: dict, model: onnx.ModelProto) -> list[dict]:
    """Per conv/FC layer and phase: cycles, MACs, MAC efficiency and the roofline bound (all MAC
    units busy, or DRAM moving the layer's input, weights and output once: each phase touches
    tensors of those three sizes, x, W, y -> dy, W, dx -> x, dy, dW). A phase in several layers
    (a backward-filter's partial sums and their sum) is one row of their cycles and MACs. The
    MACs of a phase are the forward's (each phase does as many): a mapping that executes more
    (the taps-in-place backward-filter's extra columns) is not credited for them."""
    from nncc.runtime.target import load_target

    target = load_target("vector")
    info = node_info(model)
    totals: dict[tuple[str, str], list[int]] = {}
    for row in report["layers"]:
        phase = training_phase(row)
        node = next((n for n in row["onnx_nodes"] if info.get(n, ("",))[0] in ("Conv", "Gemm")), None)
        if phase is None or node is None or not row["cycles"]:
            continue
        total = totals.setdefault((node, phase), [0, 0])
        total[0] += row["macs"]
        total[1] += row["cycles"]
    rows = []
    for (node, phase), (macs, cycles) in totals.items():
        macs = totals.get((node, "forward"), (macs,))[0]
        bound = max(macs / target.mac_units, info[node][1] / target.dram_bytes_per_cycle)
        rows.append({"node": node, "kind": "conv" if info[node][0] == "Conv" else "fc", "phase": phase,
                     "macs": macs, "cycles": cycles, "efficiency": 100 * macs / (cycles * target.mac_units),
                     "bound_cycles": int(bound),
                     "bound": "compute" if macs / target.mac_units >= info[node][1] / target.dram_bytes_per_cycle
                     else "DRAM", "of_bound": 100 * bound / cycles})
    return rows


def efficiency(rows: list[dict]) -> float | None:
    cycles = sum(r["cycles"] for r in rows)
    return 100 * sum(r["macs"] for r in rows) / (cycles * 192) if cycles else None


VGG_CONVS = [  # (layers, input channels, output channels, stage: the input is resolution / 2^stage)
    (["conv1_1"], 3, 64, 0), (["conv1_2"], 64, 64, 0), (["conv2_1"], 64, 128, 1), (["conv2_2"], 128, 128, 1),
    (["conv3_1"], 128, 256, 2), (["conv3_2", "conv3_3"], 256, 256, 2), (["conv4_1"], 256, 512, 3),
    (["conv4_2", "conv4_3"], 512, 512, 3), (["conv5_1", "conv5_2", "conv5_3"], 512, 512, 4)]
RESNET_POINTWISE = [  # ResNet-50's 1x1 convs: (name, input channels, output channels, stride, stage)
    ("layer1 conv1", 256, 64, 1, 2), ("layer1 conv3", 64, 256, 1, 2), ("layer2 conv1", 512, 128, 1, 3),
    ("layer3 conv3", 256, 1024, 1, 4), ("layer4 conv1", 2048, 512, 1, 5), ("layer2 shortcut", 256, 512, 2, 2)]


def single_conv_model(batch: int, c: int, o: int, size: int, kernel: int, stride: int = 1,
                      seed: int = 0) -> onnx.ModelProto:
    """One conv layer to train alone: a 1x1 conv from 2 channels makes its input (so that its
    backward-data is needed), the conv (pads kernel // 2), ReLU, a 1x1 conv to one channel."""
    rng = np.random.default_rng(seed)
    inits = []

    def weight(name, shape):
        w = rng.standard_normal(shape, dtype=np.float32) * np.float32(math.sqrt(2.0 / math.prod(shape[1:])))
        inits.append(helper.make_tensor(name, TensorProto.FLOAT, w.shape, w.tobytes(), raw=True))
        return name
    out = -(-size // stride)
    nodes = [helper.make_node("Conv", ["input", weight("pre.weight", (c, 2, 1, 1))], ["x"], name="pre"),
             helper.make_node("Conv", ["x", weight("conv.weight", (o, c, kernel, kernel))], ["y"], name="conv",
                              kernel_shape=[kernel, kernel], pads=[kernel // 2] * 4, strides=[stride, stride]),
             helper.make_node("Relu", ["y"], ["r"], name="relu"),
             helper.make_node("Conv", ["r", weight("post.weight", (1, o, 1, 1))], ["output"], name="post")]
    graph = helper.make_graph(nodes, "conv", [helper.make_tensor_value_info("input", TensorProto.FLOAT,
                                                                            [batch, 2, size, size])],
                              [helper.make_tensor_value_info("output", TensorProto.FLOAT, [batch, 1, out, out])], inits)
    return helper.make_model(graph, ir_version=9, opset_imports=[helper.make_opsetid("", 13)])


def conv_alone_rows(args, workdir: Path, name: str, c: int, o: int, size: int, kernel: int, stride: int = 1) -> list:
    """The three phases' rows of one conv trained alone (`single_conv_model`, MSE loss)."""
    model = single_conv_model(args.train_batch, c, o, size, kernel, stride)
    report = train_step(model, workdir, "conv_alone", args.train_batch, "--loss", "mse", "--quiet")
    return [dict(row, node=name) for row in training_rows(report, model) if row["node"] == "conv"]


def phase_table(rows: list[dict], title: str) -> str:
    """Training rows per layer and phase: MACs, cycles, MAC efficiency and the roofline bound."""
    headers = ["layer (ONNX node)", "phase", "GMAC", "cycles", "MAC eff %", "bound", "% of bound"]
    return table(headers, [[r["node"], r["phase"], r["macs"] / 1e9, r["cycles"], r["efficiency"], r["bound"],
                            r["of_bound"]] for r in rows], title)


def bench_train_layers(args, workdir: Path) -> dict:
    """Every VGG-16 conv shape (and ResNet-50's 1x1 convs) at `--train-resolution`, batch
    `--train-batch`, trained alone: per phase, and VGG's conv efficiency over its 13 layers
    (repeated shapes counted as often as they occur; conv1_1 has no backward-data)."""
    rows, size = [], args.train_resolution
    for names, c, o, stage in VGG_CONVS:
        for row in conv_alone_rows(args, workdir, ", ".join(names), c, o, size >> stage, 3):
            if not (c == 3 and row["phase"] == "backward-data"):
                rows.append(dict(row, count=len(names)))
    pointwise = [row for name, c, o, stride, stage in RESNET_POINTWISE
                 for row in conv_alone_rows(args, workdir, name, c, o, size >> stage, 1, stride)]

    def weighted(selected):
        cycles = sum(r["cycles"] * r["count"] for r in selected)
        return 100 * sum(r["macs"] * r["count"] for r in selected) / (cycles * 192)
    phases = ("forward", "backward-data", "backward-filter")
    out = {"vgg": rows, "resnet50_pointwise": pointwise, "vgg_overall": weighted(rows),
           "vgg_by_phase": {p: weighted([r for r in rows if r["phase"] == p]) for p in phases}}
    print(phase_table(rows, f"(n) VGG-16's conv layers trained alone on vector, batch {args.train_batch}, "
                            f"{size}x{size} input"), flush=True)
    print()
    print(phase_table(pointwise, f"    ResNet-50's 1x1 convs trained alone, batch {args.train_batch}"))
    print(flush=True)
    fc = out["fc"] = classifier_rows(args, workdir)
    out["fc_by_phase"] = {p: efficiency([r for r in fc if r["phase"] == p]) for p in phases}
    out["fc_overall"] = efficiency(fc)
    print(phase_table(fc, f"    FC layers (the classifier alone, trained at batch {args.train_fc_batch})"))
    print()
    print(table(["VGG-16 MAC efficiency (%)", "nncc", "paper", "goal"],
                [[f"conv, {p}", out["vgg_by_phase"][p], None, None] for p in phases] +
                [["conv, forward + backward-data + backward-filter", out["vgg_overall"], PAPER_TRAIN["conv"],
                  GOALS_TRAIN["conv"]]] +
                [[f"FC, {p}", out["fc_by_phase"][p], None, None] for p in phases] +
                [["FC, all three phases", out["fc_overall"], PAPER_TRAIN["fc"], GOALS_TRAIN["fc"]]]))
    return out


def classifier_rows(args, workdir: Path) -> list[dict]:
    """VGG-16's classifier trained alone at `--train-fc-batch` (its input: the features at
    `--train-resolution`): the FC layers' rows per phase."""
    fc_model = classifier_model(args.train_fc_batch, 512 * (args.train_resolution // 32) ** 2)
    return training_rows(train_step(fc_model, workdir, "vgg16_classifier_train", args.train_fc_batch), fc_model)


def bench_train(args, workdir: Path) -> dict:
    from nncc.compiler.zoo import build_model

    if args.train_layers:
        return bench_train_layers(args, workdir)

    out: dict = {"target": "vector", "batch": args.train_batch, "resolution": args.train_resolution,
                 "fc_batch": args.train_fc_batch}
    model = build_model("vgg16", batch=args.train_batch, resolution=args.train_resolution)
    report = train_step(model, workdir, "vgg16_train", args.train_batch)
    conv = [r for r in training_rows(report, model) if r["kind"] == "conv"]
    out["step"] = {"cycles": report["cycles"], "mac_utilization": 100 * report["mac_utilization"],
                   "phases": report["phases"], "cpu_seconds": report.get("cpu_seconds")}
    fc = classifier_rows(args, workdir)
    out["conv"], out["fc"] = conv, fc
    phases = ("forward", "backward-data", "backward-filter")
    out["conv_by_phase"] = {p: efficiency([r for r in conv if r["phase"] == p]) for p in phases}
    out["fc_by_phase"] = {p: efficiency([r for r in fc if r["phase"] == p]) for p in phases}
    out["conv_overall"], out["fc_overall"] = efficiency(conv), efficiency(fc)
    out["conv_average"] = average(r["efficiency"] for r in conv)
    out["fc_average"] = average(r["efficiency"] for r in fc)
    print(phase_table(conv, f"(n) VGG-16 training on vector, one SGD step, batch {args.train_batch}, "
                            f"{args.train_resolution}x{args.train_resolution}: conv layers"))
    print()
    print(phase_table(fc, f"    FC layers (the classifier alone, trained at batch {args.train_fc_batch})"))
    print()
    summary = [[f"conv, {p}", out["conv_by_phase"][p], None, None] for p in phases] + [
        ["conv, forward + backward-data + backward-filter (all MACs / all cycles)", out["conv_overall"],
         PAPER_TRAIN["conv"], GOALS_TRAIN["conv"]],
        ["conv, average over layer-phase rows", out["conv_average"], None, None]] + [
        [f"FC, {p}", out["fc_by_phase"][p], None, None] for p in phases] + [
        ["FC, all three phases (all MACs / all cycles)", out["fc_overall"], PAPER_TRAIN["fc"], GOALS_TRAIN["fc"]],
        [f"whole VGG-16 step at batch {args.train_batch} (every layer, update included)",
         out["step"]["mac_utilization"], None, None]]
    print(table(["MAC efficiency (%)", "nncc", "paper", "goal"], summary))
    if args.train_resnet:
        print()
        out["resnet50"] = bench_resnet_step(args, workdir)
    return out


def bench_resnet_step(args, workdir: Path) -> dict:
    """One ResNet-50 training step on vector: compile and simulation time (CPU and wall)."""
    from nncc.compiler.zoo import build_model

    batch, size = args.train_resnet_batch, args.train_resnet_resolution
    report = train_step(build_model("resnet50", batch=batch, resolution=size), workdir, "resnet50_train", batch)
    entry = {"batch": batch, "resolution": size, "cycles": report["cycles"],
             "mac_utilization": 100 * report["mac_utilization"], "instructions": report.get("instructions"),
             "cpu_seconds": report.get("cpu_seconds"), "wall_seconds": report.get("wall_seconds")}
    cpu, wall = entry["cpu_seconds"] or {}, entry["wall_seconds"] or {}
    print(table(["compile CPU s", "compile wall s", "simulate CPU s", "simulate wall s", "cycles", "MAC util %"],
                [[cpu.get("compile"), wall.get("compile"), cpu.get("simulate"), wall.get("simulate"),
                  entry["cycles"], entry["mac_utilization"]]],
                f"    ResNet-50, one training step on vector, batch {batch}, {size}x{size} (goal: simulated in "
                f"<= {GOALS_TRAIN['resnet_sim_s']:.0f} s)"))
    return entry


# --------------------------------------------------------------------------- driver


# --------------------------------------------------------------------------- (m) kernel validation


def micro_kernel_program(k: int, target):
    """One 6 x 48 x k matmul on core 0 of `target`: a (6 x k) DMA'd into SM (the broadcast memory,
    where the published kernel finds its panel), b (k x 48) into AM, c stored back."""
    from nncc.runtime import isa
    from nncc.runtime.program import Program, Symbol

    a_addr, b_addr, c_addr = 0, 4 * 6 * k, 4 * 6 * k + 4 * 48 * k
    code = [
        isa.make("dma", src=("DRAM", a_addr), src_stride=(0, k, 1), dst=("SM", 0), dst_stride=(0, k, 1),
                 shape=(1, 6, k), signal=(0,)),
        isa.make("dma", ch=1, src=("DRAM", b_addr), src_stride=(0, 48, 1), dst=("AM", 0), dst_stride=(0, 48, 1),
                 shape=(1, k, 48), signal=(1,)),
        isa.make("matmul", mnk=(6, 48, k), a=("SM", 0), a_stride=(0, k, 1), b=("AM", 0), b_stride=(0, 48, 1),
                 c=("AM", 4 * 48 * k), c_stride=(0, 48, 1), wait=(0, 1), signal=(2,)),
        isa.make("dma", src=("AM", 4 * 48 * k), src_stride=(0, 48, 1), dst=("DRAM", c_addr), dst_stride=(0, 48, 1),
                 shape=(1, 6, 48), wait=(2,)),
    ]
    symbols = [Symbol("a", "input", a_addr, (6, k)), Symbol("b", "input", b_addr, (k, 48)),
               Symbol("c", "output", c_addr, (6, 48))]
    return Program(target, code, symbols, dram_bytes=c_addr + 4 * 6 * 48)


def gemm_model(m: int, n: int, k: int, seed: int = 0) -> onnx.ModelProto:
    """y = x . w (x: [m, k] input, w: [k, n] weight)."""
    w = np.random.default_rng(seed).standard_normal((k, n), dtype=np.float32)
    graph = helper.make_graph(
        [helper.make_node("MatMul", ["x", "w"], ["y"], name="gemm")], "gemm",
        [helper.make_tensor_value_info("x", TensorProto.FLOAT, [m, k])],
        [helper.make_tensor_value_info("y", TensorProto.FLOAT, [m, n])],
        [helper.make_tensor("w", TensorProto.FLOAT, w.shape, w.tobytes(), raw=True)])
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)])
    model.ir_version = 9
    return model


def gemm_efficiency(workdir: Path, m: int, n: int, k: int, cores: int, target_set=()) -> dict:
    """A compiled GEMM on `cores` cores of `vector`: its layer's cycles and efficiency on those cores,
    outputs checked against numpy."""
    from nncc.runtime.interpreter import random_inputs, run

    model = gemm_model(m, n, k)
    program = back_end(compile_fused(model, workdir, f"gemm_{m}_{n}_{k}"), "vector",
                       target_set=(*target_set, f"cores={cores}"))
    inputs = random_inputs(program)
    result = run(program, inputs)
    w = onnx.numpy_helper.to_array(model.graph.initializer[0])
    np.testing.assert_allclose(result.outputs["y"], inputs["x"] @ w, rtol=1e-3, atol=1e-3)
    layer = max(result.layers, key=lambda layer: layer.macs)
    predicted = getattr(program, "predictions", {}).get(result.layers.index(layer), {}).get("predicted_cycles")
    return {"m": m, "n": n, "k": k, "cores": cores, "cycles": layer.cycles, "predicted_cycles": predicted,
            "efficiency": 100 * layer.macs / (layer.cycles * cores * program.target.main.macs_per_cycle)}


def library_gemm_run(m: int, n: int, k: int, ka: int, cores: int, target_set=()) -> tuple[int, float]:
    """(cycles, efficiency on those cores) of the library's NN schedule with the paper's blocking
    for `ka` (compiler/library_gemm.py), its DMAs on 3 channels per core (the library uses 10 per
    core: `ch0_al` .. `ch0_gsm` in sgemm_kernel.c); outputs checked against numpy."""
    from nncc.runtime.interpreter import random_inputs, run
    from nncc.runtime.target import load_target

    channels = max(load_target("vector", target_set).dma.channels, 3 * cores)
    target = load_target("vector", [*target_set, f"cores={cores}", f"dma.channels={channels}"])
    program = library_gemm_program(target, m, n, k, PAPER_BLOCKINGS[ka], cores)
    inputs = random_inputs(program)
    result = run(program, inputs)
    np.testing.assert_allclose(result.outputs["c"], inputs["c_in"] + inputs["a"] @ inputs["b"], rtol=1e-3, atol=1e-3)
    return result.cycles, 100 * m * n * k / (result.cycles * cores * target.main.macs_per_cycle)


def library_gemm_efficiency(m: int, n: int, k: int, ka: int, target_set=()) -> dict:
    """The library's single-core schedule at the paper's blocking for `ka`, with the published
    6 x 3-vector calls and with nncc's own call widths."""
    cycles, published = library_gemm_run(m, n, k, ka, 1, (*target_set, *PUBLISHED_KERNEL))
    _, own = library_gemm_run(m, n, k, ka, 1, target_set)
    blocking = PAPER_BLOCKINGS[ka]
    return {"ka": ka, "na": blocking.na, "ms": blocking.ms, "ma": blocking.ma, "cycles": cycles,
            "efficiency": published, "efficiency_nncc_calls": own, "paper": 100 * PAPER_GFLOPS[ka] / PAPER_PEAK_GFLOPS}


def bench_kernel(args, workdir: Path) -> dict:
    from nncc.runtime.interpreter import random_inputs, run
    from nncc.runtime.target import load_target

    # the paper times the kernel call alone: its panel's DMAs (and their launch + wait) lie outside
    target = load_target("vector", [*args.target_set, "dma.launch_cycles=0"])
    out: dict = {"target": "vector", "target_set": args.target_set, "micro_kernel": [], "single_core": [],
                 "library": [], "scaling": []}
    for k in sorted(PAPER_KERNEL):
        program = micro_kernel_program(k, target)
        inputs = random_inputs(program)
        result = run(program, inputs)
        np.testing.assert_allclose(result.outputs["c"], inputs["a"] @ inputs["b"], rtol=1e-3, atol=1e-3)
        busy = result.busy["core0.main"]
        out["micro_kernel"].append({"k": k, "cycles": busy, "efficiency": 100 * 6 * 48 * k / (busy * 48),
                                    "paper": PAPER_KERNEL[k], "formula": 100 * 3 * k / (3 * k + 13)})
    print(table(["k", "matmul cycles", "nncc %", "paper %", "3k/(3k+13) %"],
                [[r["k"], r["cycles"], r["efficiency"], r["paper"], r["formula"]] for r in out["micro_kernel"]],
                "(m) vector timing model vs the FT-M7032 (Yu et al. 2024): one 6 x 48 x k matmul on one core"))
    print()
    gemms = KERNEL_GEMMS if not args.quick else ((256, 256, 256),)
    out["single_core"] = [gemm_efficiency(workdir, m, n, k, 1, args.target_set) for m, n, k in gemms]
    print(table(["M", "N", "K", "cycles", "predicted", "efficiency %"],
                [[r["m"], r["n"], r["k"], r["cycles"], r["predicted_cycles"], r["efficiency"]]
                 for r in out["single_core"]],
                f"    single-core GEMM (compiled, cores=1; paper {PAPER_GEMM_SINGLE_CORE[0]:.0f}-"
                f"{PAPER_GEMM_SINGLE_CORE[1]:.0f} %)"))
    print()
    m, n, k = LIBRARY_GEMM if not args.quick else (1008, 192, 512)
    out["library"] = [library_gemm_efficiency(m, n, k, ka, args.target_set) for ka in sorted(PAPER_BLOCKINGS)]
    print(table(["K_A", "N_A", "M_S", "M_A", "cycles", "6x3 calls %", "nncc calls %", "paper %"],
                [[r["ka"], r["na"], r["ms"], r["ma"], r["cycles"], r["efficiency"], r["efficiency_nncc_calls"],
                  r["paper"]] for r in out["library"]],
                f"    the library's own schedule replayed (Yu et al. Fig. 4, one core): {m} x {n} x {k}"))
    print()
    out["library_scaling"] = [
        {"ka": ka, "cores": cores, "efficiency": library_gemm_run(m, n * cores, k, ka, cores,
                                                                  (*args.target_set, *PUBLISHED_KERNEL))[1]}
        for ka in (128, 512) for cores in (1, 2, 4)]
    print(table(["K_A", "cores", "efficiency % (of those cores)"],
                [[r["ka"], r["cores"], r["efficiency"]] for r in out["library_scaling"]],
                f"    the library's schedule on 1, 2, 4 cores, {n} columns per core ({m} x {n} P x {k})"))
    print()
    m, n, k = SCALING_GEMM if not args.quick else (384, 384, 32)
    out["scaling"] = [gemm_efficiency(workdir, m, n, k, cores, args.target_set) for cores in (1, 2, 4)]
    print(table(["cores", "cycles", "predicted", "efficiency % (of those cores)"],
                [[r["cores"], r["cycles"], r["predicted_cycles"], r["efficiency"]] for r in out["scaling"]],
                f"    multi-core scaling at small k: {m} x {n} x {k}"))
    return out


def build_parser() -> ArgumentParser:
    parser = ArgumentParser(prog="nncc-bench", description="The seed papers' tables on nncc's simulator.")
    parser.add_argument("--only", choices=("vgg", "scan", "resnet", "zoo", "bn", "fused", "bound", "kernel", "train"),
                        action="append", help="run only this part (repeatable; train runs only when named)")
    parser.add_argument("--batch", type=int, default=1, help="VGG-16 conv batch (default 1)")
    parser.add_argument("--resolution", type=int, default=224, help="VGG-16 input size (default 224)")
    parser.add_argument("--fc-batch", type=int, default=64, help="VGG-16 FC batch (default 64: compute-bound)")
    parser.add_argument("--width", action="store_true",
                        help="(a): also the width mapping forced on every VGG-16 conv, beside the chosen one")
    parser.add_argument("--target-set", action="append", default=[], metavar="KEY=VALUE",
                        help="(a), (m): override a field of the vector target (a what-if; repeatable)")
    parser.add_argument("--scan-resolution", type=int, default=224, help="MobileNetV2/ResNet-50 size for (b)")
    parser.add_argument("--resnet-resolution", type=int, default=224, help="ResNet-50 size for (c)")
    parser.add_argument("--resnet-targets", nargs="+", default=["vector", "edge"], help="targets for (c)")
    parser.add_argument("--zoo-resolution", type=int, default=224, help="size of every zoo model in (d)")
    parser.add_argument("--zoo-models", nargs="+", metavar="NAME", help="models for (d) (default: the whole zoo)")
    parser.add_argument("--bn-batch", type=int, default=8, help="training batch for (j) (default 8)")
    parser.add_argument("--bn-resolution", type=int, default=64, help="ResNet-50 size for (j) (default 64)")
    parser.add_argument("--bn-dense-resolution", type=int, default=32, help="DenseNet-121 size for (j) (default 32)")
    parser.add_argument("--bn-models", nargs="+", default=["resnet50", "densenet121"], metavar="NAME",
                        help="zoo models for (j) (default resnet50 densenet121)")
    parser.add_argument("--bn-plot", type=Path, metavar="FILE.png", help="(j): cycles per phase, fused vs unfused")
    parser.add_argument("--fused-resolution", type=int, default=224, help="VGG-16 head size for (k)")
    parser.add_argument("--fused-buffers", type=int, nargs="+", default=[370688, 1048576, 2097152], metavar="BYTES",
                        help="edge buffer sizes for (k) (default 362 KiB, 1 MiB, 2 MiB)")
    parser.add_argument("--train-batch", type=int, default=2, help="VGG-16 training batch for (n) (default 2)")
    parser.add_argument("--train-resolution", type=int, default=224, help="VGG-16 training input size for (n)")
    parser.add_argument("--train-fc-batch", type=int, default=64,
                        help="batch of the classifier trained alone in (n) (default 64)")
    parser.add_argument("--train-layers", action="store_true",
                        help="(n) instead: each VGG-16 conv shape (and ResNet-50's 1x1 convs) trained alone, "
                             "and the classifier")
    parser.add_argument("--train-resnet", action="store_true", help="(n) also times one ResNet-50 training step")
    parser.add_argument("--train-resnet-batch", type=int, default=8, help="its batch (default 8)")
    parser.add_argument("--train-resnet-resolution", type=int, default=224, help="its input size (default 224)")
    parser.add_argument("--quick", action="store_true", help="64x64 everywhere, FC batch 16")
    parser.add_argument("--json", type=Path, help="also write every figure to this JSON file")
    parser.add_argument("--plot", type=Path, metavar="FILE.png",
                        help="per-layer roofline and cycles/DRAM bars of every run, as FILE.PART-MODEL-TARGET.png")
    add_common_options(parser)
    return parser


@report_errors("nncc-bench")
def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    if args.quick:
        args.resolution = args.scan_resolution = args.resnet_resolution = args.zoo_resolution = 64
        args.fused_resolution = args.train_resolution = args.train_resnet_resolution = 64
        args.fc_batch = min(args.fc_batch, 16)
        args.train_fc_batch = min(args.train_fc_batch, 16)
    for size in (args.resolution, args.scan_resolution, args.resnet_resolution, args.zoo_resolution,
                 args.fused_resolution, args.train_resolution, args.train_resnet_resolution):
        if size % 32 or size < 32:
            raise NnccError(f"resolution {size} must be a positive multiple of 32")
    if min(args.batch, args.fc_batch) < 1:
        raise NnccError(f"--batch and --fc-batch must be at least 1, got {args.batch} and {args.fc_batch}")
    if min(args.train_batch, args.train_fc_batch, args.train_resnet_batch) < 2:
        raise NnccError("--train-batch, --train-fc-batch and --train-resnet-batch must be at least 2 (BatchNorm "
                        "and the check need a batch)")
    for name in [*(args.zoo_models or ()), *args.bn_models]:
        check_name(name)
    files = UserFiles()
    PLOTS.clear()
    if args.plot:  # a name for each run's figure beside FILE: FILE-stem.PART-MODEL-TARGET.suffix
        from nncc.compiler.plots import plot_format
        from nncc.support.user_files import check_writable

        plot_format(args.plot)
        check_writable("--plot", args.plot)
        PLOTS.update(folder=args.plot.parent, stem=args.plot.stem, suffix=args.plot.suffix, written=[])
    if args.json:  # checked now, not after an hour of benchmarks
        files.writes("--json", args.json)
    if args.bn_plot:
        from nncc.compiler.plots import plot_format

        plot_format(args.bn_plot, "--bn-plot")
        files.writes("--bn-plot", args.bn_plot)
    parts = args.only or ["vgg", "scan", "resnet", "zoo", "bn", "fused", "bound", "kernel"]  # (n) train when named
    results: dict = {}
    with tempfile.TemporaryDirectory(prefix="nncc-bench-") as tmp:
        workdir = Path(tmp)
        for part, function in (("vgg", bench_vgg), ("scan", bench_scan), ("resnet", bench_resnet), ("zoo", bench_zoo),
                               ("bn", bench_bn), ("fused", bench_fused), ("bound", bench_bound),
                               ("kernel", bench_kernel), ("train", bench_train)):
            if part in parts:
                if PLOTS:
                    PLOTS["part"] = part
                results[part] = function(args, workdir)
                print()
    if args.json:
        files.write_text(args.json, json.dumps(results, indent=1, default=float) + "\n")
    if PLOTS:
        print(f"nncc-bench: {len(PLOTS['written'])} plots in {PLOTS['folder']}: "
              f"{', '.join(path.name for path in PLOTS['written'])}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
