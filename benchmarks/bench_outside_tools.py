"""nncc's simulator held against ZigZag and SCALE-Sim on single layers (not part of the test suite).

    pip install zigzag-dse scalesim      # both install from PyPI; see docs/benchmarks.md (h)
    python benchmarks/bench_outside_tools.py [--json out.json]

The same four layers (a 1x1 conv, a 3x3 conv, a depthwise 3x3 conv, an FC; fp32, batch 1) on
`edge` as it ships: a 16x16 matrix array at 200 MHz with one 64K-entry (256 KiB) buffer for
inputs, weights and outputs, DRAM at 12.8 GB/s = 64 B/cycle. Each tool gets that machine in its
own terms:

- nncc: `--target=edge`, the layer compiled and run on the interpreter (cycles from the first
  instruction to the last; DRAM bytes read and written);
- ZigZag (analytical, KU Leuven): an accelerator of 16x16 MACs, a weight register and an output
  register per PE, one 2 Mbit buffer shared by I, W and O (64 B/cycle) and DRAM (64 B/cycle),
  32-bit operands; the spatial mapping nncc's matrix unit uses (K on one dimension, C on the
  other) for the conv and FC layers, ZigZag's own choice for the depthwise layer; ZigZag then
  searches the temporal mapping (LOMA) for latency. Cycles = `latency_total2` (compute, stalls,
  on- and off-loading); DRAM bytes = the words ZigZag moves across the DRAM level x 4;
- SCALE-Sim (cycle-level systolic array, Georgia Tech): a 16x16 weight-stationary array, its
  three double-buffered SRAMs (ifmap, filter, ofmap) splitting the same 64K words 24K/24K/16K,
  DRAM 16 words/cycle; SCALE-Sim's words are taken as fp32 values (DRAM bytes = words x 4). It
  has no grouped convolution: the depthwise layer is C single-channel, single-filter convs.

Differences over 10 % are explained in docs/benchmarks.md (h).
"""

from __future__ import annotations

import argparse
import contextlib
import io
import json
import math
import os
import subprocess
import sys
import tempfile
import time
from dataclasses import dataclass
from pathlib import Path

WORD = 4  # fp32 bytes
ARRAY = 16
BUFFER_WORDS = 64 * 1024
DRAM_BYTES_PER_CYCLE = 64  # edge: 12.8 GB/s at 0.2 GHz


@dataclass(frozen=True)
class Layer:
    name: str
    kind: str  # conv, depthwise, fc
    channels: int  # C (input features for fc)
    filters: int  # K (output features for fc)
    size: int = 1  # input height = width
    kernel: int = 1
    stride: int = 1
    pad: int = 0

    @property
    def out_size(self) -> int:
        return (self.size + 2 * self.pad - self.kernel) // self.stride + 1

    @property
    def macs(self) -> int:
        if self.kind == "fc":
            return self.channels * self.filters
        per_output = self.kernel ** 2 * (1 if self.kind == "depthwise" else self.channels)
        return self.filters * self.out_size ** 2 * per_output

    @property
    def weight_count(self) -> int:
        if self.kind == "fc":
            return self.channels * self.filters
        return self.filters * self.kernel ** 2 * (1 if self.kind == "depthwise" else self.channels)

    @property
    def compulsory_bytes(self) -> int:
        """Inputs, weights and outputs each moved once."""
        if self.kind == "fc":
            return WORD * (self.channels + self.weight_count + self.filters)
        return WORD * (self.channels * self.size ** 2 + self.weight_count + self.filters * self.out_size ** 2)


LAYERS = (  # shapes of MobileNetV2's and ResNet-50's layers
    Layer("pointwise 1x1, 56x56, 64->64", "conv", 64, 64, size=56),
    Layer("conv 3x3, 28x28, 128->128", "conv", 128, 128, size=28, kernel=3, pad=1),
    Layer("depthwise 3x3, 56x56, 144", "depthwise", 144, 144, size=56, kernel=3, pad=1),
    Layer("FC 1280->1000", "fc", 1280, 1000),
)


def onnx_layer(layer: Layer, precision_attributes: bool = False):
    """The layer alone as an ONNX model (no bias); ZigZag's copy carries its 32-bit operand sizes."""
    import numpy as np
    from onnx import TensorProto, helper, numpy_helper

    rng = np.random.default_rng(0)
    extra = {"weight_size": 32, "act_size": 32, "output_size": 32} if precision_attributes else {}
    if layer.kind == "fc":
        weight = rng.standard_normal((layer.filters, layer.channels)).astype(np.float32)
        node = helper.make_node("Gemm", ["x", "w"], ["y"], name="layer", transB=1, **extra)
        x_shape, y_shape = [1, layer.channels], [1, layer.filters]
    else:
        group = layer.channels if layer.kind == "depthwise" else 1
        weight = rng.standard_normal((layer.filters, layer.channels // group, layer.kernel, layer.kernel))
        weight = weight.astype(np.float32)
        node = helper.make_node("Conv", ["x", "w"], ["y"], name="layer", kernel_shape=[layer.kernel] * 2,
                                pads=[layer.pad] * 4, strides=[layer.stride] * 2, group=group, **extra)
        x_shape = [1, layer.channels, layer.size, layer.size]
        y_shape = [1, layer.filters, layer.out_size, layer.out_size]
    graph = helper.make_graph([node], "layer", [helper.make_tensor_value_info("x", TensorProto.FLOAT, x_shape)],
                              [helper.make_tensor_value_info("y", TensorProto.FLOAT, y_shape)],
                              [numpy_helper.from_array(weight, "w")])
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)])
    model.ir_version = 9
    return model


# --------------------------------------------------------------------------- nncc


def run_nncc(layer: Layer, folder: Path) -> dict:
    import onnx

    from nncc.compiler.codegen.isa_module import module_to_program
    from nncc.compiler.pipeline import Options, compile_model
    from nncc.compiler.registry import Registry
    from nncc.runtime.interpreter import run

    path = folder / "nncc.onnx"
    onnx.save(onnx_layer(layer), str(path))
    options = Options(target_options={"target": "edge", "target_set": (), "tile_order": "scan",
                                      "tile_objective": "cycles"})
    compilation = compile_model(path, Registry.default(), options, until="isa")
    result = run(module_to_program(compilation.module, compilation.store))
    return {"cycles": result.cycles, "dram_read_bytes": int(result.read_bytes.get("DRAM", 0)),
            "dram_write_bytes": int(result.write_bytes.get("DRAM", 0))}


# --------------------------------------------------------------------------- ZigZag

ZIGZAG_ACCELERATOR = f"""
name: nncc_edge
memories:
  w_reg:
    size: 32
    r_cost: 0.1
    w_cost: 0.1
    area: 0
    latency: 1
    operands: [I2]
    ports:
      - {{name: r_port_1, type: read, bandwidth_min: 32, bandwidth_max: 32, allocation: [I2, tl]}}
      - {{name: w_port_1, type: write, bandwidth_min: 32, bandwidth_max: 32, allocation: [I2, fh]}}
    served_dimensions: []
  o_reg:
    size: 32
    r_cost: 0.1
    w_cost: 0.1
    area: 0
    latency: 1
    operands: [O]
    ports:
      - {{name: r_port_1, type: read, bandwidth_min: 32, bandwidth_max: 32, allocation: [O, tl]}}
      - {{name: r_port_2, type: read, bandwidth_min: 32, bandwidth_max: 32, allocation: [O, th]}}
      - {{name: w_port_1, type: write, bandwidth_min: 32, bandwidth_max: 32, allocation: [O, fh]}}
      - {{name: w_port_2, type: write, bandwidth_min: 32, bandwidth_max: 32, allocation: [O, fl]}}
    served_dimensions: []
  buf:
    size: {BUFFER_WORDS * 32}
    r_cost: 6.0
    w_cost: 6.6
    area: 0
    latency: 1
    operands: [I1, I2, O]
    ports:
      - name: r_port_1
        type: read
        bandwidth_min: 32
        bandwidth_max: 512
        allocation: [I1, tl, I2, tl, O, tl, O, th]
      - name: w_port_1
        type: write
        bandwidth_min: 32
        bandwidth_max: 512
        allocation: [I1, fh, I2, fh, O, fh, O, fl]
    served_dimensions: [D1, D2]
  dram:
    size: 10000000000
    r_cost: 400
    w_cost: 400
    area: 0
    latency: 1
    operands: [I1, I2, O]
    ports:
      - name: rw_port_1
        type: read_write
        bandwidth_min: 32
        bandwidth_max: {DRAM_BYTES_PER_CYCLE * 8}
        allocation: [I1, fh, I1, tl, I2, fh, I2, tl, O, fh, O, tl, O, fl, O, th]
    served_dimensions: [D1, D2]
operational_array:
  unit_energy: 1.0
  unit_area: 1
  dimensions: [D1, D2]
  sizes: [{ARRAY}, {ARRAY}]
"""

ZIGZAG_MAPPING = f"""
- name: default
  spatial_mapping:
    D1: ["K, {ARRAY}"]
    D2: ["C, {ARRAY}"]
  memory_operand_links: {{O: O, W: I2, I: I1}}
- name: Gemm
  spatial_mapping:
    D1: ["K, {ARRAY}"]
    D2: ["C, {ARRAY}"]
  memory_operand_links: {{O: O, W: I2, I: I1}}
"""

ZIGZAG_DEPTHWISE_MAPPING = """
- name: default
  memory_operand_links: {O: O, W: I2, I: I1}
"""


def fix_yaml_allocations(text: str) -> str:
    """The allocation lists above are written flat for brevity; ZigZag wants 'OPERAND, DIRECTION' pairs."""
    lines = []
    for line in text.splitlines():
        if "allocation: [" in line:
            head, items = line.split("allocation: [")
            parts = [p.strip() for p in items.rstrip("]}").split(",")]
            pairs = ", ".join(f'"{a}, {b}"' for a, b in zip(parts[::2], parts[1::2]))
            tail = "}" if line.rstrip().endswith("]}") else ""
            line = f"{head}allocation: [{pairs}]{tail}"
        lines.append(line)
    return "\n".join(lines) + "\n"


def run_zigzag(layer: Layer, folder: Path) -> dict:
    import logging

    import onnx
    from zigzag.api import get_hardware_performance_zigzag
    from zigzag.hardware.architecture.memory_port import DataDirection
    from zigzag.mapping.data_movement import DataMoveAttr

    logging.disable(logging.CRITICAL)
    accelerator, mapping = folder / "edge.yaml", folder / "mapping.yaml"
    accelerator.write_text(fix_yaml_allocations(ZIGZAG_ACCELERATOR))
    mapping.write_text(ZIGZAG_DEPTHWISE_MAPPING if layer.kind == "depthwise" else ZIGZAG_MAPPING)
    model = onnx.shape_inference.infer_shapes(onnx_layer(layer, precision_attributes=True))
    path = folder / "zigzag.onnx"
    onnx.save(model, str(path))
    with contextlib.redirect_stdout(io.StringIO()), contextlib.redirect_stderr(io.StringIO()):
        _, latency, cmes = get_hardware_performance_zigzag(
            str(path), str(accelerator), str(mapping), opt="latency", dump_folder=str(folder / "zigzag-out"),
            loma_show_progress_bar=False)
    cme = cmes[0][1][0][0] if isinstance(cmes[0][1], list) else cmes[0][0]
    read_bytes = write_bytes = 0.0
    for layer_operand, levels in cme.mapping.unit_mem_data_movement.items():
        dram = levels[-1]  # the last level of every operand's hierarchy is DRAM
        moved = dram.get_attribute(DataMoveAttr.DATA_ELEM_MOVE_COUNT)  # data elements, per direction
        bits = dram.get_attribute(DataMoveAttr.DATA_PRECISION)
        read_bytes += moved.get(DataDirection.RD_OUT_TO_LOW) * bits.get(DataDirection.RD_OUT_TO_LOW) / 8
        write_bytes += moved.get(DataDirection.WR_IN_BY_LOW) * bits.get(DataDirection.WR_IN_BY_LOW) / 8
    return {"cycles": round(latency), "dram_read_bytes": round(read_bytes), "dram_write_bytes": round(write_bytes),
            "ideal_cycles": cme.ideal_cycle,
            "spatial_utilization": cme.mac_spatial_utilization}


# --------------------------------------------------------------------------- SCALE-Sim

SCALESIM_CONFIG = f"""[general]
run_name = nncc_edge

[architecture_presets]
ArrayHeight = {ARRAY}
ArrayWidth = {ARRAY}
IfmapSramSzkB = 24
FilterSramSzkB = 24
OfmapSramSzkB = 16
IfmapOffset = 0
FilterOffset = 10000000
OfmapOffset = 20000000
Dataflow = ws
Bandwidth = {DRAM_BYTES_PER_CYCLE // WORD}
ReadRequestBuffer = 32
WriteRequestBuffer = 32

[layout]
IfmapCustomLayout = False
IfmapSRAMBankBandwidth = {DRAM_BYTES_PER_CYCLE // WORD}
IfmapSRAMBankNum = 1
IfmapSRAMBankPort = 2
FilterCustomLayout = False
FilterSRAMBankBandwidth = {DRAM_BYTES_PER_CYCLE // WORD}
FilterSRAMBankNum = 1
FilterSRAMBankPort = 2

[sparsity]
SparsitySupport = false
SparseRep = ellpack_block
OptimizedMapping = false
BlockSize = 8
RandomNumberGeneratorSeed = 40

[run_presets]
InterfaceBandwidth = USER
UseRamulatorTrace = False
"""


@contextlib.contextmanager
def amortised_read_traces():
    """SCALE-Sim with its read buffers' prefetch traces appended in amortised time, the same values.

    `read_buffer.new_prefetch` appends each prefetch's rows to the whole trace so far with
    `np.concatenate`: quadratic in the prefetches, hours for the FC layer, whose 1.28 M filter
    words stream through the SRAM. Here each prefetch's rows are kept as a piece and the pieces
    joined once, when the trace is read; a piece is what `np.concatenate((trace, piece))` adds
    (the concatenation starts from an empty array of the trace's dtype and columns), so the
    trace, and every figure SCALE-Sim computes from it, is unchanged (`--scalesim-exact` runs
    the original).
    """
    import numpy as np
    from scalesim.memory.read_buffer import read_buffer

    original_prefetch = read_buffer.new_prefetch
    had_attribute = "trace_matrix" in read_buffer.__dict__

    def pieces(buffer) -> list:
        return buffer.__dict__.setdefault("_trace_pieces", [np.ones((1, 1))])

    def get(buffer):
        parts = pieces(buffer)
        if buffer.__dict__.get("_appending"):
            return parts[0][:0]  # an empty trace of the same dtype and columns: concatenate adds one piece
        if len(parts) > 1:
            parts[:] = [np.concatenate(parts, axis=0)]
        return parts[0]

    def put(buffer, value) -> None:
        if buffer.__dict__.get("_appending"):
            pieces(buffer).append(value)  # concatenate(empty, piece): the piece
        else:
            buffer.__dict__["_trace_pieces"] = [value]

    def new_prefetch(buffer):
        buffer.__dict__["_appending"] = True
        try:
            return original_prefetch(buffer)
        finally:
            buffer.__dict__["_appending"] = False

    read_buffer.trace_matrix = property(get, put)
    read_buffer.new_prefetch = new_prefetch
    try:
        yield
    finally:
        read_buffer.new_prefetch = original_prefetch
        if not had_attribute:
            del read_buffer.trace_matrix


def run_scalesim(layer: Layer, folder: Path) -> dict:
    from scalesim.scale_sim import scalesim

    config = folder / "scale.cfg"
    config.write_text(SCALESIM_CONFIG)
    topology = folder / "layer.csv"
    header = "Layer name, IFMAP Height, IFMAP Width, Filter Height, Filter Width, Channels, Num Filter, Strides,\n"
    repeat = 1
    if layer.kind == "fc":  # a 1x1 "image" of C channels
        row = f"fc, 1, 1, 1, 1, {layer.channels}, {layer.filters}, 1,\n"
    elif layer.kind == "depthwise":  # as SCALE-Sim's own 'DP' layers: one channel, one filter, C times
        padded = layer.size + 2 * layer.pad
        row = f"dw, {padded}, {padded}, {layer.kernel}, {layer.kernel}, 1, 1, {layer.stride},\n"
        repeat = layer.channels
    else:  # SCALE-Sim has no padding: the ifmap is given padded
        padded = layer.size + 2 * layer.pad
        row = f"conv, {padded}, {padded}, {layer.kernel}, {layer.kernel}, {layer.channels}, {layer.filters}, " \
              f"{layer.stride},\n"
    topology.write_text(header + row)
    layout = folder / "layout.csv"  # read even when no custom layout is used: a header alone
    layout.write_text("Layer name,\n")
    exact = os.environ.get("NNCC_SCALESIM_EXACT") == "1"  # --scalesim-exact, also seen by a --worker process
    with contextlib.redirect_stdout(io.StringIO()), (contextlib.nullcontext() if exact else amortised_read_traces()):
        sim = scalesim(save_disk_space=True, verbose=False, config=str(config), topology=str(topology),
                       layout=str(layout))
        sim.run_scale(top_path=str(folder / "scalesim-out"))
    single = sim.runner.single_layer_sim_object_list[0]
    total_cycles, compute_cycles, stall_cycles, *_ = single.get_compute_report_items()
    detail = single.get_detail_report_items()
    ifmap_reads, filter_reads, ofmap_writes = detail[11], detail[14], detail[17]
    return {"cycles": int(total_cycles) * repeat, "dram_read_bytes": int(ifmap_reads + filter_reads) * WORD * repeat,
            "dram_write_bytes": int(ofmap_writes) * WORD * repeat, "compute_cycles": int(compute_cycles) * repeat,
            "stall_cycles": int(stall_cycles) * repeat}


# --------------------------------------------------------------------------- driver


TOOLS = {"nncc": run_nncc, "zigzag": run_zigzag, "scalesim": run_scalesim}
IMPORTS = {"zigzag": "zigzag.api", "scalesim": "scalesim.scale_sim"}


def available(tool: str, python: str | None) -> str | None:
    """None when `tool` can run here (in `python`, when given), else why not."""
    if tool not in IMPORTS:
        return None
    if python:
        done = subprocess.run([python, "-c", f"import {IMPORTS[tool]}"], capture_output=True, text=True)
        return None if done.returncode == 0 else (done.stderr.strip().splitlines() or ["failed"])[-1]
    try:
        __import__(IMPORTS[tool])
    except Exception as error:  # ImportError, or a dependency that fails to load
        return f"{type(error).__name__}: {error}"
    return None


def run_tool(tool: str, index: int, folder: Path, python: str | None) -> dict:
    """`tool` on LAYERS[index], in this process or in `python` (another environment: SCALE-Sim
    3.0.0 needs NumPy < 2.4, see docs/benchmarks.md (h))."""
    if not python:
        return TOOLS[tool](LAYERS[index], folder)
    done = subprocess.run([python, __file__, "--worker", tool, str(index), str(folder)], capture_output=True,
                          text=True)
    if done.returncode != 0:
        raise RuntimeError((done.stderr.strip().splitlines() or ["failed"])[-1])
    return json.loads(done.stdout.strip().splitlines()[-1])


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--json", type=Path, help="also write every figure here")
    parser.add_argument("--tools", nargs="+", choices=list(TOOLS), default=list(TOOLS))
    parser.add_argument("--zigzag-python", metavar="PYTHON", help="run ZigZag with this interpreter")
    parser.add_argument("--scalesim-python", metavar="PYTHON", help="run SCALE-Sim with this interpreter")
    parser.add_argument("--scalesim-exact", action="store_true",
                        help="run SCALE-Sim unpatched (its read traces grow quadratically: hours for the FC layer)")
    parser.add_argument("--worker", nargs=3, metavar=("TOOL", "LAYER", "FOLDER"), help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.scalesim_exact:
        os.environ["NNCC_SCALESIM_EXACT"] = "1"
    if args.worker:
        tool, index, folder = args.worker
        print(json.dumps(TOOLS[tool](LAYERS[int(index)], Path(folder))))
        return 0
    pythons = {"zigzag": args.zigzag_python, "scalesim": args.scalesim_python}
    missing = {tool: available(tool, pythons.get(tool)) for tool in args.tools}
    for tool, why in missing.items():
        if why:
            print(f"{tool}: not run ({why}; pip install {'zigzag-dse' if tool == 'zigzag' else tool})",
                  file=sys.stderr)
    tools = [tool for tool in args.tools if not missing[tool]]
    results: dict = {}
    for index, layer in enumerate(LAYERS):
        results[layer.name] = {"macs": layer.macs, "compulsory_dram_bytes": layer.compulsory_bytes,
                               "ideal_cycles": math.ceil(layer.macs / ARRAY ** 2)}
        for tool in tools:
            with tempfile.TemporaryDirectory(prefix=f"outside-{tool}-") as tmp:
                started = time.perf_counter()
                try:
                    figures = run_tool(tool, index, Path(tmp), pythons.get(tool))
                except Exception as error:  # one tool failing on one layer: say so, go on
                    figures = {"error": f"{type(error).__name__}: {' '.join(str(error).split())[:200]}"}
                figures["wall_seconds"] = round(time.perf_counter() - started, 2)
            results[layer.name][tool] = figures
    print_table(results, tools)
    if args.json:
        args.json.write_text(json.dumps(results, indent=1) + "\n")
    return 0


def print_table(results: dict, tools: list[str]) -> None:
    head = f"{'layer':32} {'MACs':>11} {'ideal cyc':>9}"
    for tool in tools:
        head += f" | {tool + ' cycles':>15} {tool + ' DRAM B':>16}"
    print(f"edge: {ARRAY}x{ARRAY} array, one {BUFFER_WORDS // 1024}K-entry buffer, DRAM {DRAM_BYTES_PER_CYCLE} "
          "B/cycle; DRAM bytes read + written (compulsory: each tensor once)")
    print(head)
    print("-" * len(head))
    for name, row in results.items():
        line = f"{name:32} {row['macs']:>11,} {row['ideal_cycles']:>9,}"
        for tool in tools:
            figures = row[tool]
            if "error" in figures:
                line += f" | {'error':>15} {'':>16}"
            else:
                dram = figures["dram_read_bytes"] + figures["dram_write_bytes"]
                line += f" | {figures['cycles']:>15,} {dram:>16,}"
        print(line + f"   (compulsory DRAM {row['compulsory_dram_bytes']:,} B)")
    for name, row in results.items():
        for tool in tools:
            if "error" in row[tool]:
                print(f"{name}: {tool}: {row[tool]['error']}", file=sys.stderr)
    if "nncc" in tools:
        print()
        print("ratios to nncc (cycles, DRAM bytes):")
        for name, row in results.items():
            base = row["nncc"]
            if "error" in base:
                continue
            parts = []
            for tool in tools:
                if tool == "nncc" or "error" in row[tool]:
                    continue
                other = row[tool]
                parts.append(f"{tool} {other['cycles'] / base['cycles']:.2f} / "
                             f"{(other['dram_read_bytes'] + other['dram_write_bytes']) / max(1, base['dram_read_bytes'] + base['dram_write_bytes']):.2f}")
            print(f"  {name:32} " + ", ".join(parts))


if __name__ == "__main__":
    os.environ.setdefault("PYTHONWARNINGS", "ignore")
    sys.exit(main())
