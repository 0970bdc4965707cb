"""What keeps a compile short changes nothing in the program (docs/pipeline.md, "Compile time"):
a layer whose nest has the signature of one lowered before reuses its schedule, moved to its own
DRAM tensors, and gives the program a full unroll gives; the tile searches run on worker
processes give the program one process gives; the garbage collector is paused while a model
compiles and left as it was."""

from __future__ import annotations

import gc

import onnx
import pytest

from nncc.compiler.codegen import conv as conv_module
from nncc.compiler.codegen import nest as nest_module
from nncc.compiler.codegen.isa_module import module_to_program
from nncc.compiler.pipeline import Options, compile_model
from nncc.compiler.registry import Registry
from nncc.compiler.zoo import build_model


@pytest.fixture(scope="module")
def resnet18_path(tmp_path_factory):
    path = tmp_path_factory.mktemp("compile_time") / "resnet18.onnx"
    onnx.save(build_model("resnet18", batch=1, resolution=32), str(path))
    return path


@pytest.fixture(scope="module")
def mobilenet_path(tmp_path_factory):
    path = tmp_path_factory.mktemp("compile_time") / "mobilenet_v2.onnx"
    onnx.save(build_model("mobilenet_v2", batch=1, resolution=32), str(path))
    return path


def program_of(path, target: str, **target_options):
    options = Options(target_options={"target": target, **target_options})
    compilation = compile_model(path, Registry.default(), options, until="isa")
    return module_to_program(compilation.module, compilation.store)


@pytest.mark.parametrize("target", ["vector", "edge"])
def test_repeated_layers_reuse_their_schedule_and_give_the_same_program(resnet18_path, target, monkeypatch):
    relocation = nest_module.Unrolled.relocation
    moved = []

    def counting(self, other):
        found = relocation(self, other)
        moved.append(found is not None)
        return found

    monkeypatch.setattr(nest_module.Unrolled, "relocation", counting)
    reused = program_of(resnet18_path, target)
    assert sum(moved) >= 4  # ResNet-18's repeated blocks (layerN.1 after layerN.0's convs)
    monkeypatch.setattr(nest_module.Unrolled, "relocation", lambda self, other: None)  # every nest unrolled
    unrolled = program_of(resnet18_path, target)
    assert reused.instructions == unrolled.instructions
    assert reused.predictions == unrolled.predictions
    assert reused.dram_bytes == unrolled.dram_bytes
    assert [(s.name, s.addr) for s in reused.symbols] == [(s.name, s.addr) for s in unrolled.symbols]


def test_a_tensor_in_another_layout_is_not_relocated():
    """Two nests of one signature whose weight is a constant in one (a packed copy) and a run-time
    tensor in the other (strided): the second is unrolled, not moved."""
    from nncc.compiler.codegen.nest import DramTensor, Unrolled

    class Tensors(dict):
        def __missing__(self, value):
            self[value] = DramTensor(4096, (2, 3), (1, 2))  # the same shape, other strides
            return self[value]

    class Other:
        tensors = Tensors()
        nest = None

    before = Unrolled.__new__(Unrolled)
    before.tensors = [(0, DramTensor(0, (2, 3), (3, 1)))]
    monkey_positions = nest_module.positions
    try:
        nest_module.positions = lambda nest: ["w"]
        assert before.relocation(Other()) is None
    finally:
        nest_module.positions = monkey_positions


def test_the_collector_is_paused_while_compiling_and_restored(resnet18_path, monkeypatch):
    seen = []
    original = nest_module.NestLowering.jobs

    def recording(self):
        seen.append(gc.isenabled())
        return original(self)

    monkeypatch.setattr(nest_module.NestLowering, "jobs", recording)
    assert gc.isenabled()
    program_of(resnet18_path, "edge")
    assert seen and not any(seen)
    assert gc.isenabled()
    gc.disable()  # a caller that turned it off keeps it off
    try:
        program_of(resnet18_path, "edge")
        assert not gc.isenabled()
    finally:
        gc.enable()


@pytest.mark.parametrize("target", ["vector", "edge"])
def test_searching_on_two_processes_gives_the_same_program(resnet18_path, target, monkeypatch):
    shortlist_and_time = conv_module.shortlist_and_time
    here = []  # searches run in this process (a forked worker's calls stay in the worker)

    def counting(lowering, s, *args):
        here.append(s)
        return shortlist_and_time(lowering, s, *args)

    monkeypatch.setattr(conv_module, "shortlist_and_time", counting)
    alone = program_of(resnet18_path, target, search_workers=1)
    assert len(set(here)) >= 8  # ResNet-18's distinct conv and gemm shapes
    here.clear()
    from nncc.compiler.codegen import search_pool

    run_ahead, pools = search_pool.run_ahead, []

    def recording(lowering, tasks, workers, *args):
        pools.append(len(tasks))
        return run_ahead(lowering, tasks, workers, *args)

    monkeypatch.setattr(search_pool, "run_ahead", recording)
    monkeypatch.setattr("nncc.passes.fuse_groups.run_ahead", recording)
    pooled = program_of(resnet18_path, target, search_workers=2)
    # every shape was searched by the workers fuse-groups starts (for its chains' layers and for
    # tile-layers), none in this process, and tile-layers found nothing left to search
    assert not here
    assert pools[0] >= 8 and pools[1:] == [0]
    assert pooled.instructions == alone.instructions
    assert pooled.predictions == alone.predictions
    assert [(s.name, s.addr) for s in pooled.symbols] == [(s.name, s.addr) for s in alone.symbols]


def test_fuse_groups_work_on_two_processes_gives_the_same_program(mobilenet_path, monkeypatch):
    """MobileNetV2: its depthwise groups and their layers timed by the workers, the groups fused
    (or not) as one process decides."""
    from nncc.compiler.codegen import group_nest

    best_group = group_nest.best_group
    here = []

    def counting(lowering, chain):
        here.append(chain.name)
        return best_group(lowering, chain)

    monkeypatch.setattr(group_nest, "best_group", counting)
    monkeypatch.setattr("nncc.passes.fuse_groups.best_group", counting)
    alone = program_of(mobilenet_path, "vector", search_workers=1)
    assert len(here) >= 10  # MobileNetV2's inverted residual blocks
    here.clear()
    pooled = program_of(mobilenet_path, "vector", search_workers=2)
    assert not here
    assert pooled.instructions == alone.instructions
    assert pooled.predictions == alone.predictions
    assert [(s.name, s.addr) for s in pooled.symbols] == [(s.name, s.addr) for s in alone.symbols]
