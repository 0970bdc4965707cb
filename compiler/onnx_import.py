"""ONNX -> `nn` dialect.

`import_onnx(path)` loads a model (opset 7-12 upgraded to 13 with onnx's
version converter), checks it, and builds one `func.func @main` in the `nn`
dialect with a static shape on every value. Initializers and folded constants
go to a `WeightStore` and are referenced by `nn.weight` ops.

Constant subexpressions (everything computed only from initializers and
`Constant` nodes, e.g. the shape arithmetic PyTorch's exporter emits) are
evaluated at import with onnx's reference evaluator, so they never reach the IR.
Every error is an `NnccError` naming the file and the node.
"""

from __future__ import annotations

import math
import re
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import onnx
from onnx import numpy_helper
from xdsl.dialects import func
from xdsl.dialects.builtin import ArrayAttr, ModuleOp, StringAttr
from xdsl.ir import Block, Operation, Region, SSAValue
from xdsl.utils.exceptions import VerifyException

from nncc.compiler.weights import WeightStore, attach, sanitize
from nncc.dialects import nn
from nncc.support.errors import NnccError

MIN_OPSET = 13
OLDEST_OPSET = 7  # the oldest the version converter and onnxruntime support
MAX_ELEMENTS = 2**31 - 1
INPUT_NAMES_ATTR = "nn.input_names"
OUTPUT_NAMES_ATTR = "nn.output_names"
SOURCE_ATTR = "nn.source"


class OnnxImportError(NnccError):
    """A model nncc cannot import (bad file, unsupported op, bad shape)."""


# --------------------------------------------------------------------------- loading


def load_onnx(path: str | Path) -> onnx.ModelProto:
    """Read, check and upgrade an ONNX file; every failure is a one-line error."""
    path = Path(path)
    if not path.exists():
        raise OnnxImportError(f"{path}: no such file")
    if path.is_dir():
        raise OnnxImportError(f"{path}: is a directory, not an ONNX file")
    if path.stat().st_size == 0:
        raise OnnxImportError(f"{path}: the file is empty")
    checker = CheckerProcess(path) if CheckerProcess.pays(path) else None
    try:
        model = read_model(path)
        external = load_external_data(model, path)
    except BaseException:
        if checker is not None:
            checker.discard()
        raise
    if external and checker is not None:  # the file is not all of the model: it is checked here
        checker.discard()
        checker = None
    # the checker reads a file itself; handed the model, it serialises the whole of it first
    # (0.25 s for ResNet-50's 100 MB)
    return prepare_model(model, str(path), checked_file=None if external else path, checker=checker)


def read_model(path: Path) -> onnx.ModelProto:
    """The model in `path` (its external data not loaded), or a one-line error."""
    try:
        model = onnx.load(str(path), load_external_data=False)
    except Exception as error:  # protobuf raises several unrelated types
        raise OnnxImportError(f"{path}: not a readable ONNX model ({type(error).__name__}: {error})") from None
    if not model.graph.node and not model.graph.output:
        raise OnnxImportError(f"{path}: not an ONNX model (no graph: corrupt, truncated or another format)")
    return model


def load_external_data(model: onnx.ModelProto, path: Path) -> bool:
    """Read the initializers stored beside the model; a missing file is named with its tensor.
    Whether there were any."""
    from onnx.external_data_helper import (
        ExternalDataInfo, _get_all_tensors, load_external_data_for_model, uses_external_data,
    )

    for tensor in model.graph.initializer:
        if uses_external_data(tensor):
            location = ExternalDataInfo(tensor).location
            if location and not (path.parent / location).is_file():
                raise OnnxImportError(f"{path}: initializer '{tensor.name}' is stored in external data file "
                                      f"{location!r}, which is not a file beside the model")
    if not any(uses_external_data(tensor) for tensor in _get_all_tensors(model)):  # as the loader walks them
        return False
    try:
        load_external_data_for_model(model, str(path.parent))
    except Exception as error:
        raise OnnxImportError(f"{path}: cannot read external data ({type(error).__name__}: {error})") from None
    return True


def prepare_model(model: onnx.ModelProto, source: str, checked_file: Path | None = None,
                  checker: CheckerProcess | None = None) -> onnx.ModelProto:
    """Check a model (`checked_file`: the file it was read from, when it is all of it; `checker`:
    the process checking that file) and upgrade it to opset >= 13; every failure is a one-line error."""
    found = checker.verdict() if checker is not None else None
    if found is None:
        try:
            onnx.checker.check_model(str(checked_file) if checked_file is not None else model)
        except Exception as error:
            found = (str(error),)
        else:
            found = (None,)
    if found[0] is not None:
        raise OnnxImportError(f"{source}: invalid ONNX model: {found[0]}")
    return upgrade_opset(model, source)


class CheckerProcess:
    """`onnx.checker.check_model(path)` on a forked process while this one parses the file: each
    takes about 0.25 s for ResNet-50's 100 MB, and neither lets go of the GIL. Used for files
    of at least `MIN_BYTES` (below, the fork costs more than it saves), when this process can
    fork (`support.processes.may_fork`)."""

    MIN_BYTES = 16 * 2**20

    @classmethod
    def pays(cls, path: Path) -> bool:
        from nncc.support.processes import may_fork

        return path.stat().st_size >= cls.MIN_BYTES and may_fork()

    def __init__(self, path: Path):
        import multiprocessing

        context = multiprocessing.get_context("fork")
        self.receiving, sending = context.Pipe(duplex=False)
        self.process = context.Process(target=check_file, args=(str(path), sending), daemon=True)
        self.process.start()
        sending.close()

    def verdict(self) -> tuple[str | None] | None:
        """(the checker's message, or None for a valid model); None when the process died first."""
        try:
            found = self.receiving.recv()
        except EOFError:
            found = None
        self.process.join()
        self.receiving.close()
        return found

    def discard(self) -> None:
        self.process.terminate()
        self.process.join()
        self.receiving.close()


def check_file(path: str, sending) -> None:
    """In the checker's process: (message or None) sent back."""
    try:
        onnx.checker.check_model(path)
    except Exception as error:
        sending.send((str(error),))
    else:
        sending.send((None,))


def parse_input_shape(text: str) -> tuple[str | None, tuple[int, ...]]:
    """`--input-shape` values: `NAME=1x3x224x224`, or `1x3x224x224` for a model's only input."""
    name, equals, dims = text.strip().rpartition("=")
    sizes = dims.lower().split("x")
    digits = all(re.fullmatch("[0-9]+", d) for d in sizes)
    if not digits or not all(1 <= int(d) <= MAX_ELEMENTS for d in sizes) or (equals and not name):
        raise OnnxImportError(f"--input-shape {text!r}: expected NAME=D0xD1x... with sizes from 1 to "
                              f"{MAX_ELEMENTS}, e.g. input=1x3x224x224")
    return (name if equals else None), tuple(int(d) for d in sizes)


def parse_input_shapes(texts: list[str]) -> dict[str | None, tuple[int, ...]]:
    """Every `--input-shape`, by input name (None: the only input); an input given twice is an error."""
    shapes: dict[str | None, tuple[int, ...]] = {}
    for text in texts:
        name, shape = parse_input_shape(text)
        if name in shapes:
            raise OnnxImportError(f"--input-shape {text!r}: {'the input' if name is None else repr(name)} "
                                  "is given twice")
        shapes[name] = shape
    return shapes


def fix_input_shapes(model: onnx.ModelProto, shapes: dict[str | None, tuple[int, ...]],
                     source: str) -> onnx.ModelProto:
    """A copy of `model` whose graph inputs have the static `shapes` (by input name; None: the
    only input). Sizes the model declares must agree; dynamic ones (`batch`, `?`) take the given
    size."""
    if not shapes:
        return model
    initializers = {init.name for init in model.graph.initializer}
    inputs = {i.name: i for i in model.graph.input if i.name not in initializers}
    fixed = onnx.ModelProto()
    fixed.CopyFrom(model)
    by_name = {i.name: i for i in fixed.graph.input}
    if None in shapes and len(inputs) != 1:
        raise OnnxImportError(f"{source}: --input-shape without a name needs a model with one input; "
                              f"this one has {', '.join(inputs) or 'none'} (use NAME=DIMS)")
    only = next(iter(inputs)) if len(inputs) == 1 else None
    if None in shapes and only in shapes and shapes[None] != shapes[only]:
        raise OnnxImportError(f"{source}: --input-shape gives input '{only}' two shapes")
    for name, shape in shapes.items():
        name = only if name is None else name
        if name not in inputs:
            raise OnnxImportError(f"{source}: --input-shape: the model has no input '{name}' "
                                  f"(inputs: {', '.join(inputs) or 'none'})")
        dims = by_name[name].type.tensor_type.shape.dim
        if len(dims) and len(dims) != len(shape):
            raise OnnxImportError(f"{source}: --input-shape: input '{name}' has rank {len(dims)}, "
                                  f"not {len(shape)}")
        for axis, (dim, size) in enumerate(zip(dims, shape)):
            if dim.HasField("dim_value") and dim.dim_value > 0 and dim.dim_value != size:
                raise OnnxImportError(f"{source}: --input-shape: input '{name}' has size {dim.dim_value} "
                                      f"on axis {axis}, not {size}")
        shape_proto = by_name[name].type.tensor_type.shape
        shape_proto.ClearField("dim")
        for size in shape:
            shape_proto.dim.add().dim_value = size
    return fixed


def default_opset(model: onnx.ModelProto) -> int:
    for opset in model.opset_import:
        if opset.domain in ("", "ai.onnx"):
            return opset.version
    return 1


def upgrade_opset(model: onnx.ModelProto, source: str) -> onnx.ModelProto:
    version, newest = default_opset(model), onnx.defs.onnx_opset_version()
    if version > newest:
        raise OnnxImportError(f"{source}: opset {version} is newer than this onnx ({onnx.__version__}) "
                              f"knows (at most {newest})")
    if version < OLDEST_OPSET:
        raise OnnxImportError(f"{source}: opset {version} is too old: nncc reads opsets {OLDEST_OPSET} to "
                              f"{newest} (onnxruntime, which --check uses, has no older ops)")
    if version >= MIN_OPSET:
        return model
    model = rewrite_old_forms(model, source)
    try:
        return onnx.version_converter.convert_version(model, MIN_OPSET)
    except Exception as error:
        raise OnnxImportError(
            f"{source}: cannot upgrade opset {version} to {MIN_OPSET}: {error}") from None


# --------------------------------------------------------------------------- old-opset forms

COERCED_TO_2D = ("Softmax", "LogSoftmax", "Hardmax")
"""Before opset 13 these coerce the input to 2-D at `axis` (default 1) and normalise over the
flattened axis..rank-1; from 13 they normalise over `axis` (default -1) only."""

RENAMED_BY_UPGRADE = {"Upsample": "Resize", "Scatter": "ScatterElements"}
"""Old ops the version converter replaces with an op of another type (and another node name)."""


def rewrite_old_forms(model: onnx.ModelProto, source: str) -> onnx.ModelProto:
    """A copy of an opset 7-12 model whose old-only semantics are spelt in ops that mean the same
    at opset 13, so that the version converter has nothing left to reinterpret:

    - Softmax/LogSoftmax/Hardmax over an axis that is not (known to be) the last one become
      Flatten(axis) -> op(axis=1) -> Reshape(Shape(x)), the opset-13 form (onnx's converter does
      this for Softmax and LogSoftmax but leaves Hardmax with the new meaning);
    - BatchNormalization with spatial=0 (opset <= 8: statistics per C x D1 x ... position, which
      the converter refuses) becomes x * a + c with constant a = scale / sqrt(var + epsilon) and
      c = B - mean * a;
    - ops the converter replaces with another op type (Upsample -> Resize) on run-time inputs are
      refused here, under their own name, as nncc has no converter for the new op either.
    """
    model_copy = onnx.ModelProto()
    model_copy.CopyFrom(model)
    model = model_copy
    graph = model.graph
    try:
        inferred = onnx.shape_inference.infer_shapes(model).graph
    except Exception:  # an invalid model is reported by the converter or the importer
        inferred = graph
    shapes: dict[str, list[int | None]] = {}
    for info in [*inferred.input, *inferred.value_info, *inferred.output]:
        tensor = info.type.tensor_type
        if info.type.HasField("tensor_type") and tensor.HasField("shape"):
            shapes[info.name] = [d.dim_value if d.HasField("dim_value") else None for d in tensor.shape.dim]
    constants = {init.name: init for init in graph.initializer}
    for init in graph.initializer:
        shapes[init.name] = list(init.dims)
    names = {name for node in graph.node for name in [*node.input, *node.output]}
    names |= {i.name for i in graph.input} | {o.name for o in graph.output} | set(constants)

    def fresh(base: str) -> str:
        name = base
        while name in names:
            name += "_"
        names.add(name)
        return name

    def label(node: onnx.NodeProto, index: int) -> str:
        return node.name or f"{node.op_type}_{index}"

    folded = set(constants)  # values computed from constants only (folded at import)
    nodes: list[onnx.NodeProto] = []
    for index, node in enumerate(graph.node):
        node.name = label(node, index)  # the converter inserts nodes: keep the labels of the user's graph
        inputs = [name for name in node.input if name]
        is_constant = all(name in folded for name in inputs)
        if is_constant or node.op_type in ("Shape", "Size"):
            folded.update(name for name in node.output if name)
        if node.domain not in ("", "ai.onnx"):
            nodes.append(node)
        elif node.op_type in RENAMED_BY_UPGRADE and not is_constant:
            raise OnnxImportError(
                f"{source}: node '{label(node, index)}' ({node.op_type}): op {node.op_type} is not supported by "
                f"nncc (at opset 13 it is {RENAMED_BY_UPGRADE[node.op_type]}, which nncc does not compile "
                "either)")
        elif node.op_type in COERCED_TO_2D:
            nodes += coerced_to_2d(node, shapes.get(node.input[0]), fresh)
        elif node.op_type == "BatchNormalization" and node.attribute and any(
                a.name == "spatial" and a.i == 0 for a in node.attribute):
            nodes += per_position_batch_norm(node, label(node, index), shapes, constants, graph, fresh, source,
                                             model.ir_version)
        else:
            nodes.append(node)
    graph.ClearField("node")
    graph.node.extend(nodes)
    return model


def coerced_to_2d(node: onnx.NodeProto, shape, fresh) -> list[onnx.NodeProto]:
    """An opset < 13 Softmax/LogSoftmax/Hardmax as nodes that mean the same at opset 13."""
    axis = next((a.i for a in node.attribute if a.name == "axis"), 1)
    if axis == -1 or (shape is not None and axis == len(shape) - 1):
        return [node]  # already over the last axis alone: both meanings agree
    flat, result, dims = fresh(f"{node.output[0]}_2d"), fresh(f"{node.output[0]}_2d_result"), fresh(
        f"{node.input[0]}_shape")
    op = onnx.NodeProto()
    op.CopyFrom(node)
    op.ClearField("attribute")
    op.attribute.extend([a for a in node.attribute if a.name != "axis"] + [onnx.helper.make_attribute("axis", 1)])
    op.input[0], op.output[0] = flat, result
    return [onnx.helper.make_node("Shape", [node.input[0]], [dims], name=f"{node.name}/shape"),
            onnx.helper.make_node("Flatten", [node.input[0]], [flat], name=f"{node.name}/flatten", axis=axis),
            op,
            onnx.helper.make_node("Reshape", [result, dims], [node.output[0]], name=f"{node.name}/reshape")]


def per_position_batch_norm(node: onnx.NodeProto, label: str, shapes, constants, graph, fresh,
                            source: str, model_ir_version: int) -> list[onnx.NodeProto]:
    """BatchNormalization spatial=0 (inference) as Mul and Add by per-position constants."""
    def fail(message: str) -> OnnxImportError:
        return OnnxImportError(f"{source}: node '{label}' (BatchNormalization): {message}")

    used = {name for n in graph.node for name in n.input} | {o.name for o in graph.output}
    if any(name and name in used for name in node.output[1:]):
        raise fail("the running-statistics outputs exist only in training mode")
    operands = list(node.input[1:5])
    if len(operands) != 4 or not all(name in constants for name in operands):
        raise fail("spatial=0 needs scale, B, mean and var as initializers (nncc folds them into "
                   "per-position constants)")
    scale, bias, mean, var = (numpy_helper.to_array(constants[name]).astype(np.float64) for name in operands)
    x_shape = shapes.get(node.input[0])
    if x_shape is None or None in x_shape[1:] or len(x_shape) < 2:
        raise fail("spatial=0 needs the input's shape (C x D1 x ... x Dn after the batch axis) to be known")
    per_position = tuple(x_shape[1:])
    if any(tuple(a.shape) != per_position for a in (scale, bias, mean, var)):
        raise fail(f"spatial=0 normalises each position of the C x D1 x ... x Dn axes and needs scale, B, "
                   f"mean and var of shape {list(per_position)}; got "
                   f"{', '.join(str(list(a.shape)) for a in (scale, bias, mean, var))}")
    epsilon = next((a.f for a in node.attribute if a.name == "epsilon"), 1e-5)
    factor = scale / np.sqrt(var + epsilon)
    names = fresh(f"{label}.scale_factor"), fresh(f"{label}.shift"), fresh(f"{node.output[0]}_scaled")
    graph.initializer.extend([numpy_helper.from_array(factor.astype(np.float32), names[0]),
                              numpy_helper.from_array((bias - mean * factor).astype(np.float32), names[1])])
    if model_ir_version < 4:  # initializers must also be graph inputs before IR version 4
        graph.input.extend(onnx.helper.make_tensor_value_info(name, onnx.TensorProto.FLOAT, list(per_position))
                           for name in names[:2])
    return [onnx.helper.make_node("Mul", [node.input[0], names[0]], [names[2]], name=f"{label}/mul"),
            onnx.helper.make_node("Add", [names[2], names[1]], [node.output[0]], name=f"{label}/add")]


def import_onnx(path: str | Path) -> tuple[ModuleOp, WeightStore]:
    path = Path(path)
    return build_module(load_onnx(path), path.name)


def import_model(model: onnx.ModelProto, source: str = "model.onnx") -> tuple[ModuleOp, WeightStore]:
    """Build the `nn` module of an in-memory ONNX model (checked and upgraded first)."""
    return build_module(prepare_model(model, source), source)


def build_module(model: onnx.ModelProto, source: str) -> tuple[ModuleOp, WeightStore]:
    """Build the `nn` module of a checked model of opset >= 13."""
    importer = Importer(model, source)
    module = importer.run()
    attach(module, importer.store)
    return module, importer.store


# --------------------------------------------------------------------------- the importer


@dataclass
class Importer:
    model: onnx.ModelProto
    source: str
    store: WeightStore = field(default_factory=WeightStore)
    constants: dict[str, np.ndarray] = field(default_factory=dict)
    values: dict[str, SSAValue] = field(default_factory=dict)
    weight_values: dict[str, SSAValue] = field(default_factory=dict)
    block: Block = field(default_factory=Block)

    @property
    def graph(self) -> onnx.GraphProto:
        return self.model.graph

    def fail(self, message: str) -> OnnxImportError:
        return OnnxImportError(f"{self.source}: {message}")

    def run(self) -> ModuleOp:
        for init in self.graph.initializer:
            self.constants[init.name] = numpy_helper.to_array(init)
        for sparse in self.graph.sparse_initializer:
            raise self.fail(f"sparse initializer '{sparse.values.name}' is not supported")
        if not self.graph.output:
            raise self.fail("the graph has no outputs: there is nothing to compute")
        inputs = [i for i in self.graph.input if i.name not in self.constants]
        for graph_input in inputs:
            shape = self.static_shape(graph_input, "input")
            self.values[graph_input.name] = self.block.insert_arg(
                nn.tensor_type(shape), len(self.block.args))
            self.values[graph_input.name].name_hint = sanitize(graph_input.name)
        self.check_supported()
        for index, node in enumerate(self.graph.node):
            ImportNode(self, node, index).convert()
        results = [self.output_value(o) for o in self.graph.output]
        return self.build_module(inputs, results)

    def check_supported(self) -> None:
        """Before converting anything: every node that will not be folded (see ImportNode.convert)
        needs a converter. All that lack one are named in one line, with counts per op type."""
        constant = set(self.constants)
        unsupported: list[tuple[int, onnx.NodeProto]] = []
        for index, node in enumerate(self.graph.node):
            inputs = [name for name in node.input if name]
            if node.domain not in ("", "ai.onnx"):
                unsupported.append((index, node))
            elif (node.op_type in SHAPE_OPS and inputs) or (
                    node.op_type not in NEVER_FOLD and all(name in constant for name in inputs)):
                constant.update(name for name in node.output if name)
            elif node.op_type not in CONVERTERS:
                unsupported.append((index, node))
        if not unsupported:
            return
        first = ImportNode(self, unsupported[0][1], unsupported[0][0])
        counts: dict[str, int] = {}
        for _, node in unsupported:
            key = op_name(node)
            counts[key] = counts.get(key, 0) + 1
        if len(unsupported) == 1:
            raise first.fail(f"op {op_name(first.node)} is not supported by nncc; "
                             f"supported ops: {SUPPORTED_OPS_DOC}")
        listed = ", ".join(f"{op} x{count}" for op, count in counts.items())
        raise first.fail(f"op {op_name(first.node)} is not supported by nncc; unsupported ops: {listed}; "
                         f"see {SUPPORTED_OPS_DOC} for the supported ops")

    def build_module(self, inputs, results: list[SSAValue]) -> ModuleOp:
        self.block.add_op(func.ReturnOp(*results))
        function = func.FuncOp(
            "main", ([a.type for a in self.block.args], [r.type for r in results]), Region(self.block))
        module = ModuleOp([function])
        module.attributes[SOURCE_ATTR] = StringAttr(self.source)
        module.attributes[INPUT_NAMES_ATTR] = ArrayAttr([StringAttr(i.name) for i in inputs])
        module.attributes[OUTPUT_NAMES_ATTR] = ArrayAttr([StringAttr(o.name) for o in self.graph.output])
        return module

    def static_shape(self, info: onnx.ValueInfoProto, what: str) -> tuple[int, ...]:
        type_ = info.type
        if not type_.HasField("tensor_type"):
            raise self.fail(f"{what} '{info.name}' is not a tensor")
        elem = type_.tensor_type.elem_type
        if elem != onnx.TensorProto.FLOAT:
            raise self.fail(f"{what} '{info.name}' has element type "
                            f"{onnx.TensorProto.DataType.Name(elem).lower()}; nncc compiles float32 tensors")
        if not type_.tensor_type.HasField("shape"):
            raise self.fail(f"{what} '{info.name}' has no shape; nncc needs static shapes")
        shape = []
        for axis, dim in enumerate(type_.tensor_type.shape.dim):
            if dim.HasField("dim_value") and dim.dim_value == 0:
                raise self.fail(f"{what} '{info.name}' has a zero-size dimension (axis {axis}); "
                                "nncc does not compile empty tensors")
            if not dim.HasField("dim_value") or dim.dim_value < 0:
                label = f" '{dim.dim_param}'" if dim.dim_param else ""
                hint = f"; give it with --input-shape {info.name}=D0x...xDn" if what == "input" else ""
                raise self.fail(f"{what} '{info.name}' has a dynamic dimension{label} (axis {axis}); "
                                f"nncc needs static shapes{hint}")
            shape.append(dim.dim_value)
        self.check_size(shape, f"{what} '{info.name}'")
        return tuple(shape)

    def check_size(self, shape, what: str) -> None:
        if any(d > MAX_ELEMENTS for d in shape) or math.prod(shape) > MAX_ELEMENTS:
            raise self.fail(f"{what} of shape {list(shape)} is too large to represent "
                            f"(more than {MAX_ELEMENTS} elements)")

    def output_value(self, output: onnx.ValueInfoProto) -> SSAValue:
        if output.name in self.values:
            value = self.values[output.name]
        elif output.name in self.constants:
            value = self.weight(output.name, f"graph output '{output.name}'")
        else:
            raise self.fail(f"graph output '{output.name}' is produced by no node")
        declared = output.type.tensor_type.shape.dim if output.type.HasField("tensor_type") else []
        actual = nn.shape_of(value)
        if output.type.tensor_type.HasField("shape") and len(declared) == len(actual):
            for axis, (dim, size) in enumerate(zip(declared, actual)):
                if dim.HasField("dim_value") and dim.dim_value != size:
                    raise self.fail(f"graph output '{output.name}' is declared with size {dim.dim_value} "
                                    f"on axis {axis}, but the graph computes {list(actual)}")
        elif output.type.tensor_type.HasField("shape") and declared:
            raise self.fail(f"graph output '{output.name}' is declared with rank {len(declared)}, "
                            f"but the graph computes shape {list(actual)}")
        return value

    def weight(self, name: str, what: str) -> SSAValue:
        """The `nn.weight` value of constant `name`, created once, at the top of @main."""
        if name not in self.weight_values:
            array = self.constants[name]
            if array.dtype != np.float32:
                raise self.fail(f"{what} is a constant of type {array.dtype}; nncc computes float32 tensors")
            op = nn.WeightOp(self.store.add(name, array), array.shape)
            op.result.name_hint = sanitize(name)
            self.insert_weight_op(op)
            self.weight_values[name] = op.result
        return self.weight_values[name]


    def insert_weight_op(self, op: nn.WeightOp) -> None:
        """Weights go first in @main, in order of first use."""
        last = self.block.first_op
        if last is None or not isinstance(last, nn.WeightOp):
            return self.block.insert_op_before(op, last) if last else self.block.add_op(op)
        while isinstance(last.next_op, nn.WeightOp):
            last = last.next_op
        self.block.insert_op_after(op, last)


@dataclass
class ImportNode:
    """One ONNX node being converted, with helpers for its inputs and attributes."""

    importer: Importer
    node: onnx.NodeProto
    index: int

    @property
    def label(self) -> str:
        return self.node.name or f"{self.node.op_type}_{self.index}"

    def fail(self, message: str) -> OnnxImportError:
        return self.importer.fail(f"node '{self.label}' ({self.node.op_type}): {message}")

    # -- inputs

    def has_input(self, i: int) -> bool:
        return i < len(self.node.input) and self.node.input[i] != ""

    def is_const(self, i: int) -> bool:
        return self.node.input[i] in self.importer.constants

    def const(self, i: int, what: str = "") -> np.ndarray:
        name = self.node.input[i]
        if name not in self.importer.constants:
            raise self.fail(f"input {i}{' (' + what + ')' if what else ''} '{name}' must be a constant")
        return self.importer.constants[name]

    def int_const(self, i: int, what: str) -> np.ndarray:
        """A constant input that must hold integers (shapes, axes)."""
        array = np.asarray(self.const(i, what))
        if not np.issubdtype(array.dtype, np.integer):
            raise self.fail(f"input {i} ({what}) '{self.node.input[i]}' has type {array.dtype}; "
                            "ONNX requires int64")
        return array

    def value(self, i: int) -> SSAValue:
        name = self.node.input[i]
        if name in self.importer.values:
            return self.importer.values[name]
        if name in self.importer.constants:
            return self.importer.weight(name, f"node '{self.label}' ({self.node.op_type}) input '{name}'")
        raise self.fail(f"input '{name}' is produced by no earlier node (the graph is not in topological order)")

    def optional_value(self, i: int) -> SSAValue | None:
        return self.value(i) if self.has_input(i) else None

    def shape(self, i: int) -> tuple[int, ...]:
        name = self.node.input[i]
        if name in self.importer.constants:
            return tuple(self.importer.constants[name].shape)
        return nn.shape_of(self.value(i))

    # -- attributes

    def attr(self, name: str, default=None):
        for attribute in self.node.attribute:
            if attribute.name == name:
                return onnx.helper.get_attribute_value(attribute)
        return default

    def str_attr(self, name: str, default: str) -> str:
        value = self.attr(name, default)
        return value.decode() if isinstance(value, bytes) else value

    def reject_attr(self, name: str, allowed) -> None:
        value = self.attr(name, allowed)
        if value != allowed:
            raise self.fail(f"attribute {name}={value} is not supported (only {allowed})")

    # -- results

    def define(self, op: Operation, output: int = 0) -> None:
        """Append `op` and bind its result to the node's output `output`."""
        name = self.node.output[output]
        op.results[0].name_hint = sanitize(name)
        self.importer.values[name] = self.emit(op)

    def emit(self, op: Operation) -> SSAValue:
        """Verify and append an op of this node (bound to no output); returns its result."""
        try:
            op.verify()
        except VerifyException as error:
            raise self.fail(str(error)) from None
        op.attributes[nn.ONNX_NODES] = nn.onnx_nodes_attr([self.label])
        self.importer.block.add_op(op)
        return op.results[0]

    def alias(self, value: SSAValue, output: int = 0) -> None:
        self.importer.values[self.node.output[output]] = value

    def reject_used_outputs(self, first_unsupported: int, why: str) -> None:
        used = {i for n in self.importer.graph.node for i in n.input} | {
            o.name for o in self.importer.graph.output}
        for name in self.node.output[first_unsupported:]:
            if name and name in used:
                raise self.fail(f"output '{name}' is used, but {why}")

    # -- conversion

    def convert(self) -> None:
        op_type, domain = self.node.op_type, self.node.domain
        if domain not in ("", "ai.onnx"):
            raise self.fail(f"op {op_name(self.node)} is not supported by nncc; supported ops: {SUPPORTED_OPS_DOC}")
        if op_type in SHAPE_OPS and self.has_input(0):
            return self.fold_shape()
        inputs = [i for i in range(len(self.node.input)) if self.has_input(i)]
        if op_type not in NEVER_FOLD and all(self.is_const(i) for i in inputs):
            return self.fold()
        converter = CONVERTERS.get(op_type)
        if converter is None:
            raise self.fail(f"op {op_type} is not supported by nncc; supported ops: {SUPPORTED_OPS_DOC}")
        try:
            converter(self)
        except ValueError as error:
            raise self.fail(str(error)) from None

    def fold(self) -> None:
        """Evaluate a node whose inputs are all constants with onnx's reference evaluator."""
        from onnx.reference import ReferenceEvaluator

        feeds = {name: self.importer.constants[name] for name in self.node.input if name}
        try:
            evaluator = ReferenceEvaluator(self.node, opsets=self.importer.model.opset_import)
            results = evaluator.run(None, feeds)
        except Exception as error:
            raise self.fail(f"cannot evaluate this constant expression ({type(error).__name__}: {error})") from None
        for name, result in zip(self.node.output, results):
            if name:
                result = np.asarray(result)
                self.importer.check_size(result.shape, f"constant '{name}'")
                self.importer.constants[name] = result

    def fold_shape(self) -> None:
        """Shape and Size of any tensor are constants: nncc compiles static shapes."""
        shape = self.shape(0)
        if self.node.op_type == "Size":
            self.importer.constants[self.node.output[0]] = np.array(math.prod(shape), dtype=np.int64)
            return
        start, end = self.attr("start", 0), self.attr("end", None)
        self.importer.constants[self.node.output[0]] = np.array(shape[slice(start, end)], dtype=np.int64)


SHAPE_OPS = ("Shape", "Size")
"""Evaluated at import on run-time tensors too (their shapes are static)."""
NEVER_FOLD = {"RandomNormal", "RandomUniform", "RandomNormalLike", "RandomUniformLike", "Multinomial"}
SUPPORTED_OPS_DOC = "docs/conformance.md"


def op_name(node: onnx.NodeProto) -> str:
    """`Foo`, or `Foo of domain 'd'` outside the default domain."""
    return node.op_type if node.domain in ("", "ai.onnx") else f"{node.op_type} of domain '{node.domain}'"


Converter = Callable[[ImportNode], None]
CONVERTERS: dict[str, Converter] = {}


def converts(*op_types: str) -> Callable[[Converter], Converter]:
    def register(function: Converter) -> Converter:
        for op_type in op_types:
            CONVERTERS[op_type] = function
        return function

    return register


# --------------------------------------------------------------------------- windows (conv, pooling)


def window_rank(node: ImportNode) -> int:
    """Number of spatial axes of a conv/pooling input: 1 (N x C x L) or 2 (N x C x H x W)."""
    shape = node.shape(0)
    if len(shape) not in (3, 4):
        raise node.fail(f"only 1-D and 2-D {node.node.op_type} are supported (N x C x L or N x C x H x W "
                        f"input), input has shape {list(shape)}")
    return len(shape) - 2


def spatial_attrs(node: ImportNode, kernel: list[int]) -> tuple[list[int], list[int], list[int]]:
    """strides, dilations and pads ([begins..., ends...]) of len(kernel) axes, auto_pad resolved."""
    rank = len(kernel)
    strides = list(node.attr("strides", [1] * rank))
    dilations = list(node.attr("dilations", [1] * rank))
    pads = list(node.attr("pads", [0] * 2 * rank))
    if len(strides) != rank or len(dilations) != rank or len(pads) != 2 * rank:
        raise node.fail(f"a {rank}-D window needs {rank} strides, {rank} dilations and {2 * rank} pads, "
                        f"got {strides}, {dilations}, {pads}")
    if min(kernel + strides + dilations) < 1 or min(pads) < 0:
        raise node.fail(f"kernel {kernel}, strides {strides} and dilations {dilations} must be >= 1, "
                        f"pads {pads} >= 0")
    auto_pad = node.str_attr("auto_pad", "NOTSET")
    if auto_pad in ("SAME_UPPER", "SAME_LOWER"):
        size = node.shape(0)[2:]
        for axis in range(rank):
            out = -(-size[axis] // strides[axis])
            total = max(0, (out - 1) * strides[axis] + (kernel[axis] - 1) * dilations[axis] + 1 - size[axis])
            small, large = total // 2, total - total // 2
            pads[axis], pads[axis + rank] = (small, large) if auto_pad == "SAME_UPPER" else (large, small)
    elif auto_pad == "VALID":
        pads = [0] * 2 * rank
    elif auto_pad != "NOTSET":
        raise node.fail(f"auto_pad={auto_pad} is not supported")
    return strides, dilations, pads


def lift_to_2d(kernel, strides, dilations, pads) -> tuple[list[int], list[int], list[int], list[int]]:
    """1-D window parameters as 2-D ones over a size-1 leading axis (H = 1)."""
    return [1, *kernel], [1, *strides], [1, *dilations], [0, pads[0], 0, pads[1]]


def window_input(node: ImportNode, i: int = 0) -> SSAValue:
    """Input `i` of a conv/pooling node, N x C x L reshaped to N x C x 1 x L."""
    value = node.value(i)
    shape = nn.shape_of(value)
    if len(shape) == 4:
        return value
    return node.emit(nn.ReshapeOp(value, (*shape[:2], 1, *shape[2:])))


def window_weight(node: ImportNode) -> SSAValue:
    """A conv's weight, O x I x K lifted to O x I x 1 x K (as a new constant when it is one)."""
    if len(node.shape(1)) == 4 or not node.is_const(1):
        return window_input(node, 1)
    name = node.node.input[1]
    lifted = f"{name}.2d"
    while lifted in node.importer.constants:
        lifted += "_"
    node.importer.constants[lifted] = np.expand_dims(node.const(1), 2)
    return node.importer.weight(lifted, f"node '{node.label}' ({node.node.op_type}) input '{name}'")


def define_window(node: ImportNode, op: Operation) -> None:
    """Bind a 2-D conv/pooling op, reshaped back to N x C x L for a 1-D node."""
    if len(node.shape(0)) == 4:
        return node.define(op)
    result = node.emit(op)
    n, c, _, length = nn.shape_of(result)
    node.define(nn.ReshapeOp(result, (n, c, length)))


@converts("Conv")
def convert_conv(node: ImportNode) -> None:
    rank = window_rank(node)
    weight_shape = node.shape(1)
    if len(weight_shape) != rank + 2:
        raise node.fail(f"the weight of a {rank}-D conv must have rank {rank + 2}, got {list(weight_shape)}")
    kernel = list(node.attr("kernel_shape", weight_shape[2:]))
    if kernel != list(weight_shape[2:]):
        raise node.fail(f"kernel_shape {kernel} does not match the weight {list(weight_shape)}")
    strides, dilations, pads = spatial_attrs(node, kernel)
    if rank == 1:
        kernel, strides, dilations, pads = lift_to_2d(kernel, strides, dilations, pads)
    define_window(node, nn.Conv2dOp(window_input(node, 0), window_weight(node), node.optional_value(2),
                                    strides, pads, dilations, node.attr("group", 1)))


def pool_attrs(node: ImportNode):
    """kernel, strides, pads, dilations (2-D) and ceil_mode of a pooling node."""
    rank = window_rank(node)
    kernel = list(node.attr("kernel_shape", []))
    if len(kernel) != rank:
        raise node.fail(f"kernel_shape must have {rank} values for a {rank}-D input, got {kernel}")
    strides, dilations, pads = spatial_attrs(node, kernel)
    explicit = node.str_attr("auto_pad", "NOTSET") == "NOTSET"
    if explicit and any(pad >= size for pad, size in zip(pads, kernel + kernel)):
        raise node.fail(f"pads {pads} must be smaller than the kernel {kernel} "
                        "(as onnxruntime requires: a window could hold padding only)")
    if rank == 1:
        kernel, strides, dilations, pads = lift_to_2d(kernel, strides, dilations, pads)
    return kernel, strides, pads, dilations, bool(node.attr("ceil_mode", 0))


@converts("MaxPool")
def convert_max_pool(node: ImportNode) -> None:
    # storage_order only changes the Indices output, which is rejected here.
    node.reject_used_outputs(1, "MaxPool's Indices output is int64; nncc computes float32 tensors")
    define_window(node, nn.MaxPool2dOp(window_input(node), *pool_attrs(node)))


@converts("AveragePool")
def convert_avg_pool(node: ImportNode) -> None:
    define_window(node, nn.AvgPool2dOp(window_input(node), *pool_attrs(node),
                                       bool(node.attr("count_include_pad", 0))))


@converts("GlobalAveragePool")
def convert_global_avg_pool(node: ImportNode) -> None:
    node.define(nn.GlobalAvgPoolOp(node.value(0)))


@converts("GlobalMaxPool")
def convert_global_max_pool(node: ImportNode) -> None:
    node.define(nn.GlobalMaxPoolOp(node.value(0)))


# --------------------------------------------------------------------------- reductions

REDUCTIONS = ("ReduceMean", "ReduceMax", "ReduceMin", "ReduceSum", "ReduceSumSquare")
"""Imported onto the global pooling ops (see `convert_reduce`); ReduceL1/L2/Prod/LogSum/
LogSumExp are not supported."""


def reduce_axes(node: ImportNode) -> list[int] | None:
    """The reduced axes, sorted and non-negative: input 1 (ReduceSum >= 13, the others >= 18) or
    the `axes` attribute; none given means every axis, or None (no reduction) with
    noop_with_empty_axes=1."""
    rank = len(node.shape(0))
    raw = node.int_const(1, "axes") if node.has_input(1) else node.attr("axes", [])
    raw = [int(a) for a in np.asarray(raw).reshape(-1)]
    if not raw:
        return None if node.attr("noop_with_empty_axes", 0) else list(range(rank))
    axes = sorted(nn.normalize_axis(a, rank) for a in raw)
    if len(set(axes)) != len(axes):
        raise node.fail(f"axes {raw} name an axis twice")
    return axes


def reduction_constant(node: ImportNode, what: str, value: float) -> SSAValue:
    """A one-element float32 constant of this node (a scale factor) as an `nn.weight`."""
    return node_constant(node, what, np.array([value], dtype=np.float32))


def node_constant(node: ImportNode, what: str, array: np.ndarray) -> SSAValue:
    """A float32 constant of this node (a scale factor, a mask) as the `nn.weight` `NODE.what`."""
    name = f"{node.label}.{what}"
    while name in node.importer.constants:
        name += "_"
    node.importer.constants[name] = np.ascontiguousarray(array, dtype=np.float32)
    return node.importer.weight(name, f"node '{node.label}' ({node.node.op_type}) {what}")


@converts(*REDUCTIONS)
def convert_reduce(node: ImportNode) -> None:
    """ReduceMean/Max/Min/Sum/SumSquare over any axes, onto `nn.global_avg_pool` and
    `nn.global_max_pool` (which reduce every axis after the second):

    - axes [2, ..., rank-1] of a tensor of rank >= 3 (global pooling, e.g. PyTorch's
      `x.mean([2, 3])`): the pooling op on the input itself;
    - other axes: the input is viewed as groups of consecutive kept / reduced axes, transposed
      (`nn.transpose`) so that the reduced groups come last when they are not already, reshaped
      to 1 x K x R (K kept, R reduced elements) and pooled to 1 x K x 1;
    - ReduceSum = the mean times R and ReduceSumSquare = the sum of x * x (`nn.mul` by a
      constant), ReduceMin = -max(-x);
    - the result is reshaped to the output shape (keepdims=1: reduced axes of size 1; 0: dropped).
    """
    op_type, shape = node.node.op_type, node.shape(0)
    rank = len(shape)
    axes = reduce_axes(node)
    chain: list[Operation] = []  # the ops of this node, each reading the previous one's result

    def last() -> SSAValue:
        return chain[-1].results[0] if chain else node.value(0)

    if op_type == "ReduceSumSquare":
        chain.append(nn.MulOp(last(), last()))
    if axes is not None:
        keepdims = bool(node.attr("keepdims", 1))
        out_shape = tuple(1 if i in axes else d for i, d in enumerate(shape) if keepdims or i not in axes)
        size = math.prod(shape[a] for a in axes)
        if size > 1:
            if op_type == "ReduceMin":
                negate = reduction_constant(node, "negate", -1.0)
                chain.append(nn.MulOp(last(), negate))
            pool = nn.GlobalMaxPoolOp if op_type in ("ReduceMax", "ReduceMin") else nn.GlobalAvgPoolOp
            if not (rank >= 3 and axes == list(range(2, rank))):
                chain += reduction_view(last(), shape, axes)
            chain.append(pool(last()))
            if op_type in ("ReduceSum", "ReduceSumSquare"):
                chain.append(nn.MulOp(last(), reduction_constant(node, "count", float(size))))
            elif op_type == "ReduceMin":
                chain.append(nn.MulOp(last(), negate))
        if nn.shape_of(last()) != out_shape:
            chain.append(nn.ReshapeOp(last(), out_shape))
    if not chain:
        return node.alias(node.value(0))
    for op in chain[:-1]:
        node.emit(op)
    node.define(chain[-1])


def reduction_view(value: SSAValue, shape, axes: list[int]) -> list[Operation]:
    """Reshape (and transpose) ops that turn `value` into 1 x K x R, the R reduced elements of
    each of the K kept positions contiguous and in their row-major order."""
    groups: list[tuple[bool, int]] = []  # (reduced?, size) of runs of consecutive axes
    for i, d in enumerate(shape):
        if groups and groups[-1][0] == (i in axes):
            groups[-1] = (groups[-1][0], groups[-1][1] * d)
        else:
            groups.append((i in axes, d))
    kept = math.prod(size for reduced, size in groups if not reduced)
    reduced = math.prod(size for reduced, size in groups if reduced)
    ops: list[Operation] = []
    if any(r for r, _ in groups[:-1]):  # a reduced group before a kept one: move it last
        grouped = tuple(size for _, size in groups)
        if grouped != tuple(shape):
            ops.append(nn.ReshapeOp(value, grouped))
        perm = [i for i, (r, _) in enumerate(groups) if not r] + [i for i, (r, _) in enumerate(groups) if r]
        ops.append(nn.TransposeOp(ops[-1].results[0] if ops else value, perm))
    last = ops[-1].results[0] if ops else value
    if nn.shape_of(last) != (1, kept, reduced):
        ops.append(nn.ReshapeOp(last, (1, kept, reduced)))
    return ops


# --------------------------------------------------------------------------- normalisation


@converts("BatchNormalization")
def convert_batch_norm(node: ImportNode) -> None:
    if node.attr("training_mode", 0):
        raise node.fail("training_mode=1 is not supported at import (training uses nncc --train)")
    node.reject_used_outputs(1, "the running-statistics outputs exist only in training mode")
    if len(node.shape(0)) < 2:
        raise node.fail(f"input must have a channel axis, got {list(node.shape(0))}")
    operands = [node.value(i) for i in range(5)]
    node.define(nn.BatchNormOp(*operands, node.attr("epsilon", 1e-5)))


@converts("LRN")
def convert_lrn(node: ImportNode) -> None:
    if len(node.shape(0)) != 4:
        raise node.fail(f"only LRN on N x C x H x W tensors is supported, input has shape {list(node.shape(0))}")
    size = node.attr("size")
    if size is None:
        raise node.fail("attribute size is required")
    node.define(nn.LRNOp(node.value(0), size, node.attr("alpha", 1e-4), node.attr("beta", 0.75),
                         node.attr("bias", 1.0)))


@converts("LayerNormalization")
def convert_layer_norm(node: ImportNode) -> None:
    """LayerNormalization over axes [axis, rank), composed of ops every target lowers (one pass
    over the tensor each, no fused kernel): the input viewed as 1 x K x R (R normalised
    elements of each of the K rows), mean = `nn.global_avg_pool`, d = x - mean, var =
    `nn.global_avg_pool` of d * d, inv = 1 / `nn.sqrt`(var + epsilon) on the K x 1 statistics,
    y = d * inv viewed back, times scale, plus bias (`nn.mul`, `nn.add`, numpy broadcasting).
    The Mean and InvStdDev outputs are the K statistics reshaped to [d0, ..., d(axis-1), 1, ...]."""
    shape = node.shape(0)
    rank = len(shape)
    if rank == 0:
        raise node.fail("input must have rank >= 1")
    axis = nn.normalize_axis(node.attr("axis", -1), rank)
    kept, reduced = math.prod(shape[:axis]), math.prod(shape[axis:])
    x = node.value(0)
    if nn.shape_of(x) != (1, kept, reduced):
        x = node.emit(nn.ReshapeOp(x, (1, kept, reduced)))
    mean = node.emit(nn.GlobalAvgPoolOp(x))
    centred = node.emit(nn.SubOp(x, mean))
    var = node.emit(nn.GlobalAvgPoolOp(node.emit(nn.MulOp(centred, centred))))
    epsilon = reduction_constant(node, "epsilon", float(node.attr("epsilon", 1e-5)))
    std = node.emit(nn.SqrtOp(node.emit(nn.AddOp(var, epsilon))))
    inv_std = node.emit(nn.DivOp(reduction_constant(node, "one", 1.0), std))
    y = node.emit(nn.MulOp(centred, inv_std))
    if nn.shape_of(y) != shape:
        y = node.emit(nn.ReshapeOp(y, shape))
    for i, what in ((1, "scale"), (2, "bias")):
        if not node.has_input(i):
            continue
        if nn.broadcast_shapes(shape, node.shape(i)) != shape:
            raise node.fail(f"{what} of shape {list(node.shape(i))} does not broadcast to the input {list(shape)}")
        y = node.emit((nn.MulOp if i == 1 else nn.AddOp)(y, node.value(i)))
    node.alias(y)
    stat_shape = (*shape[:axis], *[1] * (rank - axis))
    for output, value in ((1, mean), (2, inv_std)):
        if len(node.node.output) > output and node.node.output[output]:
            node.define(nn.ReshapeOp(value, stat_shape), output)


# --------------------------------------------------------------------------- elementwise


@converts("Relu")
def convert_relu(node: ImportNode) -> None:
    node.define(nn.ReluOp(node.value(0)))


@converts("Sigmoid")
def convert_sigmoid(node: ImportNode) -> None:
    node.define(nn.SigmoidOp(node.value(0)))


@converts("Sqrt")
def convert_sqrt(node: ImportNode) -> None:
    node.define(nn.SqrtOp(node.value(0)))


@converts("HardSwish")
def convert_hard_swish(node: ImportNode) -> None:
    node.define(nn.HardSwishOp(node.value(0)))


@converts("Tanh")
def convert_tanh(node: ImportNode) -> None:
    node.define(nn.TanhOp(node.value(0)))


@converts("Erf")
def convert_erf(node: ImportNode) -> None:
    """Erf alone; PyTorch's GELU (x * 0.5 * (1 + Erf(x / sqrt(2)))) becomes one `nn.gelu` in
    canonicalize-nn."""
    node.define(nn.ErfOp(node.value(0)))


@converts("Gelu")
def convert_gelu(node: ImportNode) -> None:
    """Opset 20's Gelu: approximate="none" (erf) or "tanh"."""
    approximate = node.str_attr("approximate", "none")
    if approximate not in ("none", "tanh"):
        raise node.fail(f"attribute approximate={approximate!r} is not 'none' or 'tanh'")
    node.define((nn.GeluOp if approximate == "none" else nn.GeluTanhOp)(node.value(0)))


@converts("LeakyRelu")
def convert_leaky_relu(node: ImportNode) -> None:
    node.define(nn.LeakyReluOp(node.value(0), node.attr("alpha", 0.01)))


@converts("HardSigmoid")
def convert_hard_sigmoid(node: ImportNode) -> None:
    node.define(nn.HardSigmoidOp(node.value(0), node.attr("alpha", 0.2), node.attr("beta", 0.5)))


@converts("Clip")
def convert_clip(node: ImportNode) -> None:
    low, high = node.attr("min", -math.inf), node.attr("max", math.inf)
    if node.has_input(1):
        low = clip_bound(node, 1, "min")
    if node.has_input(2):
        high = clip_bound(node, 2, "max")
    node.define(nn.ClipOp(node.value(0), low, high))


def clip_bound(node: ImportNode, i: int, what: str) -> float:
    bound = np.asarray(node.const(i, what))
    if bound.size != 1:
        raise node.fail(f"{what} must be a scalar, got shape {list(bound.shape)}")
    return float(bound.reshape(()))


BINARY_OPS = {"Add": nn.AddOp, "Sub": nn.SubOp, "Mul": nn.MulOp, "Div": nn.DivOp}


@converts(*BINARY_OPS)
def convert_binary(node: ImportNode) -> None:
    node.define(BINARY_OPS[node.node.op_type](node.value(0), node.value(1)))


MAX_POWER_PRODUCTS = 8
"""Integer (and half-integer) constant exponents up to this size are products of x (and a
square root); larger or other exponents use exp(y * log(x))."""


@converts("Pow")
def convert_pow(node: ImportNode) -> None:
    """x ** y. A constant y with one value (broadcasting nothing) is exact: 0 gives a constant of
    ones, 1 is x, an integer n a chain of `nn.mul` (square and multiply: x ** 3 is
    `nn.mul x, (nn.mul x, x)`, PyTorch's `x.pow(2)` one `nn.mul`), n + 0.5 adds an `nn.sqrt`,
    a negative one divides 1 by the result (`nn.div`). Any other y (other values, or computed
    at run time) is exp(y * log(x)) (`nn.log`, `nn.mul` or `nn.scale`, `nn.exp`): equal for
    x > 0 and x = 0 < y; where x < 0 it gives NaN (as ONNX does for a non-integer y, unlike it
    for an integer one), and 0 ** 0 is NaN instead of 1."""
    shape, x, power = node.shape(0), node.value(0), None
    out_shape = nn.broadcast_shapes(shape, node.shape(1))
    if node.is_const(1):
        exponent = np.asarray(node.const(1, "exponent"), dtype=np.float64)
        values = set(exponent.reshape(-1).tolist())
        power = float(next(iter(values))) if len(values) == 1 else None
        if power == 0.0:
            node.importer.constants[node.node.output[0]] = np.ones(out_shape, np.float32)
            return
        if power is not None and out_shape == shape and (2 * power).is_integer() \
                and abs(power) <= MAX_POWER_PRODUCTS:
            return emit_chain(node, *power_chain(node, x, power))
    log = nn.LogOp(x)
    if power is not None and out_shape == shape:
        product = nn.ScaleOp(log.result, power)
    else:
        product = nn.MulOp(log.result, node.value(1))
    exp = nn.ExpOp(product.result)
    emit_chain(node, [log, product, exp], exp.result)


def power_chain(node: ImportNode, x: SSAValue, power: float) -> tuple[list[Operation], SSAValue]:
    """x ** power for a (half-)integer power != 0 as products, a square root and a reciprocal."""
    chain: list[Operation] = []
    whole, half = int(abs(power)), not abs(power).is_integer()
    result = None
    if half:
        chain.append(nn.SqrtOp(x))
        result = chain[-1].results[0]
    square, n = x, whole
    while n:  # square and multiply
        if n & 1:
            if result is None:
                result = square
            else:
                chain.append(nn.MulOp(result, square))
                result = chain[-1].results[0]
        n >>= 1
        if n:
            chain.append(nn.MulOp(square, square))
            square = chain[-1].results[0]
    if power < 0:
        chain.append(nn.DivOp(reduction_constant(node, "one", 1.0), result))
        result = chain[-1].results[0]
    return chain, result


@converts("Exp")
def convert_exp(node: ImportNode) -> None:
    node.define(nn.ExpOp(node.value(0)))


@converts("Log")
def convert_log(node: ImportNode) -> None:
    node.define(nn.LogOp(node.value(0)))


@converts("Neg")
def convert_neg(node: ImportNode) -> None:
    node.define(nn.ScaleOp(node.value(0), -1.0))


@converts("Reciprocal")
def convert_reciprocal(node: ImportNode) -> None:
    node.define(nn.DivOp(reduction_constant(node, "one", 1.0), node.value(0)))


@converts("Cast", "CastLike")
def convert_cast(node: ImportNode) -> None:
    """A cast of a run-time (float32) tensor to float32 is the tensor itself (the `*_expanded`
    function bodies' CastLike of constants to the input's type); to another type it is refused."""
    if node.node.op_type == "Cast":
        to = node.attr("to")
    elif node.is_const(1):
        to = onnx.helper.np_dtype_to_tensor_dtype(np.asarray(node.const(1)).dtype)
    else:
        to = onnx.TensorProto.FLOAT  # every run-time tensor is float32
    if to != onnx.TensorProto.FLOAT:
        name = onnx.TensorProto.DataType.Name(to).lower()
        raise node.fail(f"output '{node.node.output[0]}' is of type {name}; nncc computes float32 tensors")
    if node.is_const(0):  # CastLike(constant, x): a constant still (a Pow's exponent stays exact)
        node.importer.constants[node.node.output[0]] = np.asarray(node.const(0), dtype=np.float32)
        return
    node.alias(node.value(0))


@converts("Sum")
def convert_sum(node: ImportNode) -> None:
    """Sum of n inputs: a chain of n-1 `nn.add` (one input is an identity)."""
    total = node.value(0)
    for i in range(1, len(node.node.input)):
        add = nn.AddOp(total, node.value(i))
        if i == len(node.node.input) - 1:
            return node.define(add)
        total = node.emit(add)
    node.alias(total)


@converts("Identity")
def convert_identity(node: ImportNode) -> None:
    node.alias(node.value(0))


@converts("Dropout")
def convert_dropout(node: ImportNode) -> None:
    """`nn.dropout` with its ratio (opset >= 12: input 1, else the attribute; 0.5 by default)."""
    if node.has_input(2) and bool(node.const(2, "training_mode")):
        raise node.fail("training_mode=true is not supported (Dropout is an identity in inference; "
                        "training uses nncc --train)")
    node.reject_used_outputs(1, "Dropout's mask output is bool; nncc computes float32 tensors")
    if node.has_input(1) and not node.is_const(1):  # a run-time ratio: nothing for inference, refused in training
        dropout = nn.DropoutOp(node.value(0), 0.0)
        dropout.attributes[nn.RATIO_INPUT] = StringAttr(node.node.input[1])
        node.define(dropout)
        return
    ratio = float(node.const(1, "ratio")) if node.has_input(1) else float(node.attr("ratio", 0.5))
    if not 0.0 <= ratio < 1.0:
        raise node.fail(f"ratio {ratio} is not in [0, 1)")
    node.define(nn.DropoutOp(node.value(0), ratio))


# --------------------------------------------------------------------------- matrix products


@converts("Gemm")
def convert_gemm(node: ImportNode) -> None:
    node.define(nn.GemmOp(node.value(0), node.value(1), node.optional_value(2),
                          bool(node.attr("transA", 0)), bool(node.attr("transB", 0)),
                          node.attr("alpha", 1.0), node.attr("beta", 1.0)))


@converts("MatMul")
def convert_matmul(node: ImportNode) -> None:
    node.define(nn.MatMulOp(node.value(0), node.value(1)))


# --------------------------------------------------------------------------- shapes and data movement


def reshape_to(node: ImportNode, shape) -> None:
    source = node.value(0)
    shape = tuple(int(d) for d in shape)
    if shape == nn.shape_of(source):
        return node.alias(source)
    node.define(nn.ReshapeOp(source, shape))


@converts("Flatten")
def convert_flatten(node: ImportNode) -> None:
    shape = node.shape(0)
    axis = node.attr("axis", 1)
    if not -len(shape) <= axis <= len(shape):
        raise node.fail(f"axis {axis} is out of range for rank {len(shape)}")
    axis = axis + len(shape) if axis < 0 else axis
    reshape_to(node, (math.prod(shape[:axis]), math.prod(shape[axis:])))


@converts("Reshape")
def convert_reshape(node: ImportNode) -> None:
    source, target = node.shape(0), [int(d) for d in node.int_const(1, "shape")]
    allow_zero = node.attr("allowzero", 0)
    if not allow_zero:
        target = [source[i] if d == 0 else d for i, d in enumerate(target)]
    if target.count(-1) > 1:
        raise node.fail(f"shape {target} has more than one -1")
    if -1 in target:
        known = math.prod(d for d in target if d != -1)
        if known == 0 or math.prod(source) % known:
            raise node.fail(f"cannot reshape {list(source)} into {target}")
        target[target.index(-1)] = math.prod(source) // known
    if math.prod(target) != math.prod(source) or min(target, default=1) < 0:
        raise node.fail(f"cannot reshape {list(source)} into {target}")
    reshape_to(node, target)


def raw_axes(node: ImportNode) -> list[int]:
    """Squeeze/Unsqueeze axes: input 1 (opset >= 13) or the `axes` attribute."""
    axes = node.int_const(1, "axes") if node.has_input(1) else node.attr("axes", [])
    return [int(a) for a in np.asarray(axes).reshape(-1)]


@converts("Squeeze")
def convert_squeeze(node: ImportNode) -> None:
    shape = node.shape(0)
    axes = sorted(nn.normalize_axis(a, len(shape)) for a in raw_axes(node))
    axes = axes or [i for i, d in enumerate(shape) if d == 1]
    if any(shape[a] != 1 for a in axes):
        raise node.fail(f"cannot squeeze axes {axes} of shape {list(shape)}")
    reshape_to(node, [d for i, d in enumerate(shape) if i not in axes])


@converts("Unsqueeze")
def convert_unsqueeze(node: ImportNode) -> None:
    shape = list(node.shape(0))
    axes = raw_axes(node)
    rank = len(shape) + len(axes)
    for axis in sorted(nn.normalize_axis(a, rank) for a in axes):
        shape.insert(axis, 1)
    reshape_to(node, shape)


@converts("Transpose")
def convert_transpose(node: ImportNode) -> None:
    rank = len(node.shape(0))
    perm = list(node.attr("perm", list(range(rank))[::-1]))
    if sorted(perm) != list(range(rank)):
        raise node.fail(f"perm {perm} is not a permutation of the {rank} input axes")
    if perm == list(range(rank)):
        return node.alias(node.value(0))
    node.define(nn.TransposeOp(node.value(0), perm))


@converts("Concat")
def convert_concat(node: ImportNode) -> None:
    rank = len(node.shape(0))
    axis = nn.normalize_axis(node.attr("axis"), rank)
    inputs = [node.value(i) for i in range(len(node.node.input)) if node.has_input(i)]
    if len(inputs) == 1:
        return node.alias(inputs[0])
    node.define(nn.ConcatOp(inputs, axis))


def define_box(node: ImportNode, output: int, starts: list[int], steps: list[int], shape: list[int]) -> None:
    """Bind output `output` to the strided box of input 0 (an alias when it is the whole input)."""
    source = node.shape(0)
    if 0 in shape:
        raise node.fail(f"output '{node.node.output[output]}' has a zero-size dimension (axis {shape.index(0)}); "
                        "nncc does not compile empty tensors")
    if tuple(shape) == tuple(source) and all(step == 1 for step in steps):
        return node.alias(node.value(0), output)
    node.define(nn.SliceOp(node.value(0), starts, steps, shape), output)


@converts("Split")
def convert_split(node: ImportNode) -> None:
    """One `nn.slice` per output (each a contiguous alias when it can be, see SliceOp)."""
    shape = node.shape(0)
    axis = nn.normalize_axis(node.attr("axis", 0), len(shape))
    count, size = len(node.node.output), shape[axis]
    if node.has_input(1):
        sizes = [int(s) for s in node.int_const(1, "split").reshape(-1)]
    elif node.attr("split") is not None:  # opset < 13 (the version converter moves it to input 1)
        sizes = [int(s) for s in node.attr("split")]
    else:
        parts = node.attr("num_outputs", count)
        if parts != count:
            raise node.fail(f"num_outputs={parts} but the node has {count} outputs")
        if node.attr("num_outputs") is None and size % count:
            raise node.fail(f"axis {axis} of size {size} does not split into {count} equal parts")
        chunk = -(-size // parts)
        sizes = [chunk] * (parts - 1) + [size - chunk * (parts - 1)]
    if len(sizes) != count or sum(sizes) != size or min(sizes) < 0:
        raise node.fail(f"split {sizes} into {count} outputs does not divide axis {axis} of size {size}")
    offset = 0
    for output, part in enumerate(sizes):
        if node.node.output[output]:
            starts = [offset if a == axis else 0 for a in range(len(shape))]
            define_box(node, output, starts, [1] * len(shape), [part if a == axis else d for a, d in enumerate(shape)])
        offset += part


@converts("Slice")
def convert_slice(node: ImportNode) -> None:
    """Constant starts/ends/axes/steps (opset >= 10 inputs), ONNX clamping, negative steps."""
    shape = node.shape(0)
    rank = len(shape)
    starts = [int(s) for s in node.int_const(1, "starts").reshape(-1)]
    ends = [int(e) for e in node.int_const(2, "ends").reshape(-1)]
    axes = [int(a) for a in node.int_const(3, "axes").reshape(-1)] if node.has_input(3) else list(range(len(starts)))
    steps = [int(s) for s in node.int_const(4, "steps").reshape(-1)] if node.has_input(4) else [1] * len(starts)
    if not len(starts) == len(ends) == len(axes) == len(steps):
        raise node.fail(f"starts {starts}, ends {ends}, axes {axes} and steps {steps} differ in length")
    axes = [nn.normalize_axis(a, rank) for a in axes]
    if len(set(axes)) != len(axes):
        raise node.fail(f"axes {axes} name an axis twice")
    box_starts, box_steps, box_shape = [0] * rank, [1] * rank, list(shape)
    for axis, start, end, step in zip(axes, starts, ends, steps):
        dim = shape[axis]
        if step == 0:
            raise node.fail(f"step 0 on axis {axis}")
        start, end = start + dim if start < 0 else start, end + dim if end < 0 else end
        if step > 0:
            start, end = min(max(start, 0), dim), min(max(end, 0), dim)
            count = max(0, -(-(end - start) // step))
        else:
            start, end = min(max(start, 0), dim - 1), min(max(end, -1), dim - 1)
            count = max(0, -(-(start - end) // -step))
        box_starts[axis], box_steps[axis], box_shape[axis] = (start if count else 0), step, count
    define_box(node, 0, box_starts, box_steps, box_shape)


def emit_chain(node: ImportNode, chain: list[Operation], result: SSAValue) -> None:
    """Append the ops of `chain` (each reading earlier ones) and bind the node's output to `result`,
    the result of the last one, or an earlier value (an alias) when the chain is empty."""
    for op in chain[:-1]:
        node.emit(op)
    if chain:
        return node.define(chain[-1])
    node.alias(result)


def index_runs(indices: list[int]) -> list[tuple[int, int, int]]:
    """`indices` in order as (start, step, count) runs of a positive step, longest first:

        [0, 1, 2, 3, 3, 5, 7, 0] -> [(0, 1, 4), (3, 2, 3), (0, 1, 1)]
    """
    runs: list[tuple[int, int, int]] = []
    i = 0
    while i < len(indices):
        step = indices[i + 1] - indices[i] if i + 1 < len(indices) else 0
        count = 1
        if step > 0:
            while i + count < len(indices) and indices[i + count] - indices[i + count - 1] == step:
                count += 1
        runs.append((indices[i], step if count > 1 else 1, count))
        i += count
    return runs


def gather_chain(value: SSAValue, axis: int, indices: np.ndarray) -> tuple[list[Operation], SSAValue]:
    """Ops taking the elements of `value` at the constant `indices` (normalised) along `axis`, as
    ONNX Gather: one `nn.slice` per run of `index_runs` (a run that is the whole axis is `value`
    itself; equal runs share one slice), an `nn.concat` of the runs along `axis`, and an
    `nn.reshape` to shape[:axis] + indices.shape + shape[axis + 1:]. Returns the ops and the result.

        Gather(x: 1x768, [[0, 1, 2, 3], [3, 3, 3, 3]], axis=1) ->
          %a = nn.slice %x starts [0, 0] steps [1, 1] -> 1x4;  %b = nn.slice %x starts [0, 3] ... -> 1x1
          %c = nn.concat %a, %b, %b, %b, %b axis 1 -> 1x8;     nn.reshape %c -> 1x2x4
    """
    shape = nn.shape_of(value)
    chain: list[Operation] = []
    pieces: dict[tuple[int, int, int], SSAValue] = {}
    parts: list[SSAValue] = []
    for run in index_runs([int(i) for i in indices.reshape(-1)]):
        if run not in pieces:
            start, step, count = run
            if count == shape[axis]:
                pieces[run] = value
            else:
                chain.append(nn.SliceOp(value, [start if a == axis else 0 for a in range(len(shape))],
                                        [step if a == axis else 1 for a in range(len(shape))],
                                        [count if a == axis else d for a, d in enumerate(shape)]))
                pieces[run] = chain[-1].results[0]
        parts.append(pieces[run])
    if len(parts) > 1:
        chain.append(nn.ConcatOp(parts, axis))
    gathered = chain[-1].results[0] if chain else value
    out_shape = tuple(shape[:axis]) + tuple(indices.shape) + tuple(shape[axis + 1:])
    if nn.shape_of(gathered) != out_shape:
        chain.append(nn.ReshapeOp(gathered, out_shape))
    return chain, chain[-1].results[0] if chain else value


def constant_indices(node: ImportNode, dims: list[int], tuples: bool = False, what: str = "indices") -> np.ndarray:
    """Input 1 as integer indices into an axis of size dims[0], or with `tuples` into the axes of
    sizes `dims` (the array's last axis indexing them in order), negative ones counted from the
    end; out of range is an error."""
    if not node.is_const(1):
        raise node.fail(f"{what} '{node.node.input[1]}' are computed at run time; nncc gathers with constant "
                        "indices only (a static data movement)")
    indices = node.int_const(1, what).astype(np.int64)
    bounds = np.array(dims, dtype=np.int64) if tuples else np.int64(dims[0] if dims else 0)
    normalised = np.where(indices < 0, indices + bounds, indices)
    if normalised.size and (normalised.min() < 0 or (normalised >= bounds).any()):
        raise node.fail(f"{what} out of range for axes of size {list(dims)}")
    return normalised


@converts("Gather")
def convert_gather(node: ImportNode) -> None:
    """Gather with constant indices (PyTorch's `x[..., i]`, `select`, `as_strided`): slices of the
    input and their concat (`gather_chain`), all copies the accelerators do by DMA."""
    shape = node.shape(0)
    axis = nn.normalize_axis(node.attr("axis", 0), len(shape))
    indices = constant_indices(node, [shape[axis]])
    emit_chain(node, *gather_chain(node.value(0), axis, indices))


@converts("GatherND")
def convert_gather_nd(node: ImportNode) -> None:
    """GatherND with constant indices (the dynamo exporter's adaptive pooling): the indexed
    leading axes of the data (after `batch_dims`, which are indexed too) are viewed as one axis
    (`nn.reshape`) and gathered along it (`gather_chain`) at the flat positions."""
    shape = node.shape(0)
    batch = node.attr("batch_dims", 0)
    if not node.is_const(1):
        constant_indices(node, [], tuples=True)  # the one-line refusal
    depth = node.shape(1)[-1] if node.shape(1) else 0
    if not 0 <= batch < len(shape) or not 1 <= depth <= len(shape) - batch or len(node.shape(1)) <= batch:
        raise node.fail(f"indices of shape {list(node.shape(1))} with batch_dims={batch} do not index data "
                        f"of shape {list(shape)}")
    indices = constant_indices(node, shape[batch:batch + depth], tuples=True)
    if tuple(indices.shape[:batch]) != tuple(shape[:batch]):
        raise node.fail(f"indices {list(indices.shape)} and data {list(shape)} differ on the batch_dims={batch} axes")
    # every (batch position, index tuple) as one position of the flattened leading batch+depth axes
    batch_index = np.indices(indices.shape[:-1])[:batch]
    coordinates = [*batch_index, *np.moveaxis(indices, -1, 0)]
    flat = np.ravel_multi_index(tuple(coordinates), shape[:batch + depth]) if coordinates else np.zeros((), np.int64)
    value, chain = node.value(0), []
    leading = (math.prod(shape[:batch + depth]),) + tuple(shape[batch + depth:])
    if leading != tuple(shape):
        chain.append(nn.ReshapeOp(value, leading))
        value = chain[-1].results[0]
    more, result = gather_chain(value, 0, np.asarray(flat))
    emit_chain(node, chain + more, result)


@converts("Where")
def convert_where(node: ImportNode) -> None:
    """Where with a constant condition (the dynamo exporter's `masked_fill` with a constant mask):
    X * m + Y * (1 - m) with the mask m = condition as float32, products with a constant folded at
    import, a zero term left out. Unlike Where, an inf or NaN in the unselected operand gives NaN."""
    if not node.is_const(0):
        raise node.fail(f"condition '{node.node.input[0]}' is computed at run time; nncc compiles Where "
                        "with a constant condition (it computes float32 tensors, not bool)")
    mask = np.asarray(node.const(0)).astype(np.float32)
    out_shape = nn.broadcast_shapes(nn.broadcast_shapes(mask.shape, node.shape(1)), node.shape(2))
    chain: list[Operation] = []
    terms: list[SSAValue] = []
    for i, factor in ((1, mask), (2, 1.0 - mask)):
        if not factor.any():
            continue
        if node.is_const(i):
            product = np.asarray(node.const(i), dtype=np.float32) * factor
            if product.any():
                terms.append(node_constant(node, f"where{i}", product))
        elif factor.all():
            terms.append(node.value(i))
        else:
            chain.append(nn.MulOp(node.value(i), node_constant(node, f"mask{i}", factor)))
            terms.append(chain[-1].results[0])
    if len(terms) == 2:
        chain.append(nn.AddOp(*terms))
    result = chain[-1].results[0] if chain else (terms[0] if terms else None)
    if result is None or nn.shape_of(result) != out_shape:
        raise node.fail(f"the selected values do not cover the output of shape {list(out_shape)} "
                        "(a constant broadcast to it); nncc does not expand constants at run time")
    emit_chain(node, chain, result)


@converts("Softmax")
def convert_softmax(node: ImportNode) -> None:
    rank = len(node.shape(0))
    node.define(nn.SoftmaxOp(node.value(0), nn.normalize_axis(node.attr("axis", -1), rank)))
