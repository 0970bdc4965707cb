"""Lower the `fused`/`nn` IR of @main to a `Program` for an accelerator target.

For every op, in order: a `layer` marker naming it and its ONNX nodes, the tile jobs of
its code generator, scheduled (double buffering, multicast, semaphores), then a
`barrier` (the next layer reads what this one stored). Inputs, outputs and weights are
DRAM symbols; intermediate tensors get DRAM space without a symbol, reused once their
last reader is done (`dram_plan.py`); reshapes alias their input.
"""

from __future__ import annotations

from xdsl.dialects import func
from xdsl.dialects.builtin import IntegerAttr, ModuleOp
from xdsl.ir import Operation

from nncc.compiler.codegen.context import Lowering, is_alias, layer_name, source_address
from nncc.compiler.codegen.dram_plan import DramPlan, PlacedAddresses, last_uses
from nncc.compiler.codegen.lowering_table import LOWERINGS
from nncc.compiler.codegen.scheduler import Scheduler
from nncc.compiler.modules import main_function, names_attr
from nncc.compiler.weights import WeightStore
from nncc.dialects import nn, tile
from nncc.runtime import isa
from nncc.runtime.program import Program
from nncc.runtime.target import Target
from nncc.support import progress
from nncc.support.errors import NnccError

def layers_of(main: func.FuncOp) -> list[Operation]:
    """The ops of @main that are layers: all but weights and the return."""
    return [op for op in main.body.block.ops if not isinstance(op, (nn.WeightOp, func.ReturnOp))]


CORES_ATTR, BUFFERS_ATTR = "tile.cores", "tile.buffers"  # set by partition-cores, double-buffer


def module_int(module: ModuleOp, name: str) -> int | None:
    attr = module.attributes.get(name)
    return attr.value.data if isinstance(attr, IntegerAttr) else None


def pipeline_decisions(module: ModuleOp) -> dict[str, int]:
    """Cores and buffers as the compiler's passes decided: one of each when a pass did not run."""
    return {"cores": module_int(module, CORES_ATTR) or 1, "buffers": module_int(module, BUFFERS_ATTR) or 1}


def lower_module(module: ModuleOp, store: WeightStore, target: Target, tile_order: str = "scan",
                 skip_unsupported: bool = False, cores: int | None = None,
                 buffers: int | None = None, compare_orders: bool = False, objective: str = "cycles") -> Program:
    """The program of @main; `program.predictions` holds the cost model's per-layer figures.

    `cores` and `buffers` (slots per buffer kind) default to the module's `tile.cores` and
    `tile.buffers`, else to every core and double buffering (the pipeline passes them
    explicitly, see `pipeline_decisions`). `skip_unsupported` (benchmarks timing conv/FC
    layers only) gives an op without a code generator DRAM room for its result but no code.
    `compare_orders` adds, for Scan conv/gemm layers, the DRAM bytes naive order would move.
    `objective` ("cycles" or "dram") is what tile choice minimises for layers without a `tile`."""
    main = main_function(module)
    program = Program(target, [])
    lowering = Lowering(target, program, store, tile_order=tile_order,
                        layer_cores=cores or module_int(module, CORES_ATTR) or target.cores,
                        buffers=buffers or module_int(module, BUFFERS_ATTR) or 2,
                        compare_orders=compare_orders, objective=objective)
    returned = main.body.block.last_op
    assert isinstance(returned, func.ReturnOp)
    layers = layers_of(main)
    plan = lowering.dram_plan = DramPlan(program, last_uses(layers, returned.operands))
    lowering.addresses = PlacedAddresses(plan)
    args = list(main.body.block.args)
    for name, value in zip(names_attr(module, "nn.input_names", len(args), "input"), args):
        lowering.addresses[value] = program.allocate(name, "input", nn.shape_of(value)).addr
    output_names = names_attr(module, "nn.output_names", len(returned.operands), "output")
    claim_outputs(lowering, returned, output_names)
    from nncc.compiler.codegen.data import plan_in_place_concats

    plan_in_place_concats(lowering, main.body.block)  # producers (nests too) write into concat slices
    lowering.concats_planned = True
    with progress.stage("lowering", total=len(layers), unit="layers") as task:
        for position, op in enumerate(layers):
            plan.layer = position
            task.update(detail=layer_name(op))
            if skip_unsupported and not is_alias(op) and op.name not in LOWERINGS:
                for result in op.results:
                    lowering.address(result)
            else:
                lower_op(lowering, op)
            plan.release(position)
            task.advance()
    plan.layer = len(layers)
    copy_unowned_outputs(lowering, returned, output_names)
    program.dram_plan = plan.summary()  # peak DRAM bytes with and without reuse
    program.predictions = lowering.predictions  # layer ordinal -> predicted cycles and DRAM bytes
    return program


def claim_outputs(lowering: Lowering, returned: func.ReturnOp, names: list[str]) -> None:
    """Outputs computed by an op are written straight into their output symbol."""
    for name, value in zip(names, returned.operands):
        earlier = list(returned.operands)[: names.index(name)]
        if value in lowering.addresses or isinstance(value.owner, nn.WeightOp) or is_alias(value.owner) \
                or any(other is value for other in earlier):
            continue  # an input, a constant, an alias or a second name: copied at the end
        lowering.addresses[value] = lowering.program.allocate(name, "output", nn.shape_of(value)).addr


def copy_unowned_outputs(lowering: Lowering, returned: func.ReturnOp, names: list[str]) -> None:
    """An output that aliases an input, a weight, a reshape or another output is copied."""
    from nncc.compiler.codegen.stream_nest import copy_output

    claimed = {s.name for s in lowering.program.symbols_of("output")}
    for name, value in zip(names, returned.operands):
        if name in claimed:
            continue
        symbol = lowering.program.allocate(name, "output", nn.shape_of(value))
        emit_layer(lowering, f"copy_{name}", "copy", [],
                   lambda: copy_output(lowering, value, symbol.addr, f"copy_{name}"))


def lower_op(lowering: Lowering, op: Operation) -> None:
    if isinstance(op, nn.ReshapeOp):
        lowering.addresses[op.result] = source_address(lowering, op.input)
        return
    if is_alias(op):
        lowering.addresses[op.result] = source_address(lowering, op.input) + 4 * op.contiguous_offset()
        return
    if isinstance(op, tile.NestOp):
        from nncc.compiler.codegen.nest import lower_nest

        emit_layer(lowering, op.layer.data, op.attributes["op"].data, nn.onnx_nodes_of(op),
                   lambda: lower_nest(lowering, op), nn.phase_of(op))
        return
    generator = LOWERINGS.get(op.name)
    if generator is None:
        raise NnccError(f"layer {layer_name(op)}: {op.name} has no code generator for "
                        f"target {lowering.target.name} yet")
    emit_layer(lowering, layer_name(op), op.name, nn.onnx_nodes_of(op), lambda: generator(lowering, op),
               nn.phase_of(op))


def emit_layer(lowering: Lowering, name: str, op_name: str, nodes: list[str], generate,
               phase: str = "forward") -> None:
    """A layer marker (with its training phase), the scheduled jobs of the layer, and a barrier."""
    program = lowering.program
    lowering.layer_index += 1
    lowering.layer_name = name
    program.instructions.append(isa.make("layer", name=name, op=op_name, nodes=",".join(nodes), phase=phase))
    for phase, (kinds, jobs, *rest) in enumerate(generate()):  # rest: slots, then a relocation (lower_nest)
        if phase:  # phases reuse slot addresses and semaphores: the previous one must be done
            program.instructions.append(isa.make("barrier"))
        scheduler = Scheduler(lowering.target, kinds, rest[0] if rest else lowering.buffers, lowering.cores)
        program.instructions += scheduler.schedule(jobs, *rest[1:])
    program.instructions.append(isa.make("barrier"))
