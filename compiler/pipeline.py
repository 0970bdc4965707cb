"""The whole compiler on one screen: its stages, in order, and the passes of each.

    ONNX --import-onnx--> nn --graph passes--> fused --tiling--> tile
         --vectorisation--> vector --codegen--> isa --emit--> .s / .nnbin

`--emit=STAGE` stops after STAGE and prints its IR; `--disable-pass=NAME` drops a
pass; `--add-passes=PIPELINE` appends users' passes to the graph stage. The IR is
verified after every pass (see `pass_manager`). The back end's decisions (target, cores,
tile order and objective, buffers) are recorded in the module once, by the first pass that
makes them, and read by the later ones (`passes/decisions.py`). `nncc --target=T`, `nncc-opt`
and `nncc-bench` all run these passes, lower-to-isa included, through `run_staged`.
"""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING

from nncc.support import progress
from nncc.support.errors import NnccError

if TYPE_CHECKING:  # onnx and xDSL are imported when a model is compiled: `nncc --help` stays fast
    import onnx
    from xdsl.dialects.builtin import ModuleOp

    from nncc.compiler.pass_manager import IRPrinting
    from nncc.compiler.registry import Registry
    from nncc.compiler.weights import WeightStore


@dataclass(frozen=True)
class Stage:
    name: str
    passes: tuple[str, ...]
    summary: str
    built: bool = True


STAGES = (
    Stage("nn", (), "the ONNX model in the nn dialect, as imported"),
    Stage("fused", ("canonicalize-nn", "fold-batch-norm", "fuse-epilogues"),
          "graph passes on nn: BatchNorm folding, conv/gemm + residual add + activation fusion"),
    Stage("tile", ("partition-cores", "fuse-groups", "tile-layers", "dram-layout"),
          "cores, fused groups (intermediates on chip), the loop nest of every layer, NHWC feature maps"),
    Stage("vector", ("double-buffer",), "double-buffered DMA overlapping compute"),
    Stage("isa", ("lower-to-isa",), "one op per machine instruction, addresses allocated"),
)
STAGE_NAMES = tuple(stage.name for stage in STAGES)
TRAINING_PASSES = {"nn": ("canonicalize-nn", "autodiff"), "fused": ("canonicalize-nn",)}
"""`--train` (docs/training.md): the nn stage ends with the training step (`autodiff`, its options
from `Options.training`); BatchNorm is not folded (batch statistics) nor activations fused."""
FUSE_BATCH_NORM_TRAINING = "fuse-batch-norm-training"  # --train on an accelerator target, before lowering
CP_DECOMPOSE = "cp-decompose"  # a graph pass run only when asked for (`Options.cp_rank`, `nncc --cp-rank`)
IMPORT_PASS = "import-onnx"


def no_printing() -> IRPrinting:
    from nncc.compiler.pass_manager import IRPrinting

    return IRPrinting()


@dataclass
class Options:
    emit: str | None = None
    disabled: set[str] = field(default_factory=set)
    extra_passes: str = ""
    printing: IRPrinting = field(default_factory=no_printing)
    target_options: dict = field(default_factory=dict)  # options of the back end's passes, see with_target_options
    input_shapes: dict = field(default_factory=dict)  # input name (None: the only one) -> static shape
    training: dict | None = None  # --train: the autodiff pass's options (loss, lr, momentum, ...)
    cp_rank: int | float | None = None  # --cp-rank: cp-decompose{rank=...} runs before fuse-epilogues


@dataclass
class Compilation:
    model_path: Path
    model: onnx.ModelProto
    module: ModuleOp
    store: WeightStore


def stages_until(last: str) -> tuple[Stage, ...]:
    """The built stages up to `last`, which must be built itself."""
    stage = STAGES[STAGE_NAMES.index(last)]
    if not stage.built:
        raise NnccError(f"stage '{stage.name}' ({stage.summary}) is not implemented yet; "
                        f"available stages: {', '.join(s.name for s in STAGES if s.built)}")
    return tuple(s for s in STAGES[: STAGE_NAMES.index(last) + 1] if s.built)


def pipeline_passes(stage: Stage, registry: Registry, options: Options) -> list:
    chosen = TRAINING_PASSES.get(stage.name, stage.passes) if options.training is not None else stage.passes
    names = [name for name in chosen if name not in options.disabled]
    if stage.name == "fused" and options.cp_rank is not None and CP_DECOMPOSE not in options.disabled:
        at = names.index("fuse-epilogues") if "fuse-epilogues" in names else len(names)
        names.insert(at, f"{CP_DECOMPOSE}{{rank={options.cp_rank!r}}}")
    passes = [with_target_options(p, options) for p in (registry.pipeline(",".join(names)) if names else [])]
    if options.training is not None:
        passes = [dataclasses.replace(p, **options.training) if p.name == "autodiff" else p for p in passes]
        if stage.name == "fused" and options.target_options.get("target") not in ("reference", None):
            if FUSE_BATCH_NORM_TRAINING not in options.disabled:  # BN/ReLU into the convs (pre/post units)
                passes += [with_target_options(p, options) for p in registry.pipeline(FUSE_BATCH_NORM_TRAINING)]
            passes += registry.pipeline("lower-training-ops")  # forward ops the back end lowers
    if stage.name == "fused" and options.extra_passes:
        passes += registry.pipeline(options.extra_passes)
    return passes


def with_target_options(module_pass, options: Options):
    """Give a pass the command line's back-end options it has fields for (target, target_set,
    tile_order, tile_objective; compare_orders, skip_unsupported of lower-to-isa), and `buffers`:
    1 when double-buffer is disabled (tiles then fill whole memories), else 2. The first pass that
    needs a decision records it in the module and the later ones read it there (passes/decisions.py);
    they are handed the same values, which they accept, so every pass may be the first."""
    fields = {f.name for f in dataclasses.fields(module_pass)}
    offered = {**options.target_options, "buffers": 1 if "double-buffer" in options.disabled else 2}
    given = {k: v for k, v in offered.items() if k in fields}
    return dataclasses.replace(module_pass, **given) if given else module_pass


STAGE_ATTR = "nn.stage"  # module attribute: the last stage the pipeline ran on it


def compile_model(model_path: Path, registry: Registry, options: Options, until: str) -> Compilation:
    """Import `model_path` and run every stage up to and including `until`. At `isa` the isa ops
    are not built yet: `pass_manager.built` builds them (printing does), `module_to_program`
    does not need them. A `.mlir` file is IR saved at some stage (`--emit=STAGE -o FILE`, maybe
    edited by hand): compilation continues after that stage (`compile_saved`)."""
    from xdsl.dialects.builtin import StringAttr

    from nncc.compiler.onnx_import import build_module, fix_input_shapes, load_onnx
    from nncc.compiler.pass_manager import check_pass_names, verify
    from nncc.dialects import nn

    if model_path.suffix == ".mlir":
        return compile_saved(model_path, registry, options, until)
    check_pass_names(options.disabled, registry.passes, "--disable-pass")
    options.printing.check_names([*registry.passes, IMPORT_PASS])
    registry.pipeline(options.extra_passes, "--add-passes")  # users' passes fail before the import
    stages = stages_until(until)
    with collector_paused():
        with progress.stage(IMPORT_PASS):
            model = fix_input_shapes(load_onnx(model_path), options.input_shapes, str(model_path))
            module, store = build_module(model, model_path.name)
            if options.training is not None:  # canonicalize-nn keeps the dropouts for autodiff
                module.attributes[nn.MODE] = StringAttr("training")
            verify(module, IMPORT_PASS)
        options.printing.after_pass(IMPORT_PASS, module)
        run_stages(module, stages, registry, options)
    return Compilation(model_path, model, module, store)


def collector_paused():
    """No cyclic garbage collection while a model compiles: the IR, the weights and the back end's
    jobs are hundreds of thousands of objects, each allocation counting towards a collection that
    walks them all, and the compile makes little cyclic garbage (erased ops, probe nests): 0.7 s of
    ResNet-50's compile, for 6 % more memory at the peak (`scheduler.gc_paused`)."""
    from nncc.compiler.codegen.scheduler import gc_paused

    return gc_paused()


def compile_saved(ir_path: Path, registry: Registry, options: Options, until: str) -> Compilation:
    """Read IR written at some stage (its `nn.stage`; the weights beside it) and run the stages
    after it up to `until`: `nncc m.tile.mlir --target=edge --run` lowers a hand-edited tile
    stage. There is no ONNX model (`model` is None)."""
    from nncc.compiler.ir_files import read_module
    from nncc.compiler.pass_manager import check_pass_names
    from nncc.compiler.weights import store_of
    from nncc.support.user_files import UserFiles

    check_pass_names(options.disabled, registry.passes, "--disable-pass")
    options.printing.check_names([*registry.passes, IMPORT_PASS])
    module = read_module(str(ir_path), registry, UserFiles())
    done = saved_stage(module, ir_path)
    if STAGE_NAMES.index(done) > STAGE_NAMES.index(until):
        raise NnccError(f"{ir_path}: the IR is at stage {done}, past the requested stage {until}")
    run_stages(module, stages_until(until)[len(stages_until(done)):], registry, options)
    return Compilation(ir_path, None, module, store_of(module, "nncc"))


def saved_stage(module: ModuleOp, ir_path: Path) -> str:
    """The stage `module` was saved at: its `nn.stage` attribute, else `nn` (IR from nncc-opt or
    written by hand without one goes through every stage)."""
    from xdsl.dialects.builtin import StringAttr

    attr = module.attributes.get(STAGE_ATTR)
    if attr is None:
        return "nn"
    if not isinstance(attr, StringAttr) or attr.data not in STAGE_NAMES:
        raise NnccError(f"{ir_path}: module attribute {STAGE_ATTR} must be one of {', '.join(STAGE_NAMES)}, "
                        f"not {attr}")
    return attr.data


def compile_further(compilation: Compilation, registry: Registry, options: Options, after: str,
                    until: str) -> Compilation:
    """A copy of `compilation`, whose module is at stage `after`, compiled on to `until`; the
    original is left as it is (a benchmark lowers one fused module several ways)."""
    from nncc.compiler.weights import WeightStore, attach

    module = compilation.module.clone()
    store = WeightStore({name: compilation.store[name] for name in compilation.store.names()})
    attach(module, store)
    run_stages(module, stages_until(until)[len(stages_until(after)):], registry, options)
    return Compilation(compilation.model_path, compilation.model, module, store)


def run_stages(module: ModuleOp, stages: tuple[Stage, ...], registry: Registry, options: Options) -> None:
    """Run `stages`; the module records the last one (`nn.stage`), so saved IR resumes after it."""
    from xdsl.dialects.builtin import StringAttr

    ctx = registry.context()
    with collector_paused():
        for stage in stages:
            run_staged(module, pipeline_passes(stage, registry, options), ctx, options.printing)
            module.attributes[STAGE_ATTR] = StringAttr(stage.name)


def run_staged(module: ModuleOp, passes: list, ctx, printing: IRPrinting | None = None) -> None:
    """`run_passes`, each pass a stage of the progress bar (when a tool reports progress)."""
    from nncc.compiler.pass_manager import run_passes

    for module_pass in passes:
        with progress.stage(module_pass.name):
            run_passes(module, [module_pass], ctx, printing)
