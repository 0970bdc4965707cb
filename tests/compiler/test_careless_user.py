"""Issue 8: the tools tried as a careless user would. Each bad input is one stderr line naming what
is wrong, with exit code 2 (3: a fault of the simulated machine), never a traceback, and touches no
input. The files are tiny and built once; most cases fail before compiling."""

import os
import subprocess
import sys
from pathlib import Path

import numpy as np
import onnx
import pytest
from onnx import TensorProto, helper, numpy_helper

from nncc.compiler import cli, opt, zoo_cli
from nncc.runtime import cli as run_cli

TOOLS = {"nncc": cli.main, "nncc-opt": opt.main, "nncc-run": run_cli.main, "nncc-zoo": zoo_cli.main}
TOML = (Path(run_cli.__file__).parent / "targets" / "vector.toml").read_text()


def model(nodes, inputs, outputs, initializers=(), opset=17, elem=TensorProto.FLOAT):
    graph = helper.make_graph(
        nodes, "g", [helper.make_tensor_value_info(n, elem, s) for n, s in inputs],
        [helper.make_tensor_value_info(n, elem, s) for n, s in outputs],
        [numpy_helper.from_array(np.asarray(a), n) for n, a in initializers])
    return helper.make_model(graph, opset_imports=[helper.make_opsetid("", opset)], ir_version=9)


def relu(shape=(4, 64), opset=17, elem=TensorProto.FLOAT):
    return model([helper.make_node("Relu", ["x"], ["y"], name="r")], [("x", shape)], [("y", shape)],
                 opset=opset, elem=elem)


def matmul(w=np.ones((64, 64), np.float32), name="mm"):
    return model([helper.make_node("MatMul", ["x", "W"], ["y"], name=name)], [("x", [4, 64])], [("y", [4, 64])],
                 [("W", w)])


def external_data_model(folder: Path) -> None:
    """ext.onnx keeps its weight in weights.bin, which is then removed."""
    from onnx.external_data_helper import convert_model_to_external_data

    m = matmul()
    convert_model_to_external_data(m, all_tensors_to_one_file=True, location="weights.bin", size_threshold=0)
    onnx.save(m, folder / "ext.onnx")
    (folder / "weights.bin").unlink()


MODELS = {
    "relu.onnx": relu(),
    "dyn.onnx": relu(("batch", 64)),
    "zero.onnx": relu((0, 64)),
    "huge.onnx": relu((1, 3, 100000, 100000)),
    "int.onnx": relu(elem=TensorProto.INT64),
    "opset1.onnx": relu(opset=1),
    "opset99.onnx": relu(opset=99),
    "noout.onnx": model([helper.make_node("Relu", ["x"], ["y"])], [("x", [1, 4])], []),
    "cycle.onnx": model([helper.make_node("Add", ["x", "b"], ["a"], name="n1"),
                         helper.make_node("Relu", ["a"], ["b"], name="n2")], [("x", [1, 4])], [("b", [1, 4])]),
    "dup.onnx": model([helper.make_node("Relu", ["x"], ["y"], name="n1"),
                       helper.make_node("Relu", ["x"], ["y"], name="n2")], [("x", [1, 4])], [("y", [1, 4])]),
    "einsum.onnx": model([helper.make_node("Einsum", ["x", "x"], ["y"], name="e", equation="ij,ij->ij")],
                         [("x", [1, 4])], [("y", [1, 4])]),
    "noinit.onnx": model([helper.make_node("MatMul", ["x", "W"], ["y"], name="mm")], [("x", [1, 2])], [("y", [1, 4])]),
    "intweight.onnx": matmul(np.ones((64, 64), np.int32)),
    "floatshape.onnx": model([helper.make_node("Reshape", ["x", "s"], ["y"], name="rs")], [("x", [1, 4])],
                             [("y", [4, 1])], [("s", np.array([4.0, 1.0], np.float32))]),
    "mm.onnx": matmul(),
}


def toml(old: str, new: str) -> str:
    assert old in TOML
    return TOML.replace(old, new, 1)


TARGETS = {
    "slash.toml": toml('name = "vector"', 'name = "../evil"'),
    "energy.toml": toml("mac_energy_pj = 4.6", "mac_energy_pj = 1e308"),
    "clock.toml": toml("clock_ghz = 1.0", "clock_ghz = nan"),
    "cores.toml": toml("cores = 4", "cores = 0"),
    "lanes.toml": toml("lanes = 16", 'lanes = "16"'),
    "unknown.toml": "colour = 1\n" + TOML,
    "nokey.toml": toml("cores = 4\n", ""),
    "latency.toml": toml("latency_ns = 100.0", "latency_ns = 1e300"),
    "tinydram.toml": toml("size_bytes = 4294967296", "size_bytes = 1024"),
}


@pytest.fixture(scope="module")
def workspace(tmp_path_factory) -> Path:
    folder = tmp_path_factory.mktemp("careless")
    for name, proto in MODELS.items():
        onnx.save(proto, folder / name)
    for name, text in TARGETS.items():
        (folder / name).write_text(text)
    external_data_model(folder)
    (folder / "empty.onnx").write_bytes(b"")
    (folder / "garbage.onnx").write_bytes(bytes(range(256)) * 3)
    (folder / "half.onnx").write_bytes((folder / "relu.onnx").read_bytes()[:40])
    (folder / "latin1.toml").write_bytes(b'name = "caf\xe9"\n')
    (folder / "adir.onnx").mkdir()
    (folder / "adir.mlir").mkdir()
    x = np.ones((4, 64), np.float32)
    np.savez(folder / "in.npz", x=x)
    np.savez(folder / "empty.npz")
    np.savez(folder / "strings.npz", y=np.array(["a"] * 256).reshape(4, 64))
    np.savez(folder / "other.npz", z=x)
    assert cli.main([str(folder / "mm.onnx"), "--program", str(folder / "mm"), "-q"]) == 0
    assert cli.main([str(folder / "mm.onnx"), "--emit=nn", "-o", str(folder / "mm.nn.mlir")]) == 0
    ir = (folder / "mm.nn.mlir").read_text()
    (folder / "intattr.mlir").write_text(ir.replace('nn.weights = "mm.nn.weights.npz"', "nn.weights = 3"))
    (folder / "lost.mlir").write_text(ir.replace("mm.nn.weights.npz", "lost.npz"))
    (folder / "text.mlir").write_text(ir.replace("mm.nn.weights.npz", "notes.npz"))
    (folder / "notes.npz").write_text("not an archive")
    (folder / "ints.mlir").write_text(ir.replace("mm.nn.weights.npz", "ints.npz"))
    np.savez(folder / "ints.npz", W=np.ones((64, 64), np.int32))
    (folder / "shape.mlir").write_text(ir.replace("mm.nn.weights.npz", "shape.npz"))
    np.savez(folder / "shape.npz", W=np.ones((3,), np.float32))
    (folder / "foo.mlir").write_text(ir.replace("nn.matmul", "foo.matmul"))
    (folder / "blank.mlir").write_text("\n")
    return folder


CASES = [
    # model files
    ("nncc", ["missing.onnx"], 2, "missing.onnx: no such file"),
    ("nncc", ["missing.mlir", "--report", "r.json"], 2, "missing.mlir: no such file"),
    ("nncc", ["adir.mlir", "--run"], 2, "adir.mlir: cannot read IR (Is a directory)"),
    ("nncc", ["empty.onnx", "--emit=nn"], 2, "empty.onnx: the file is empty"),
    ("nncc", ["garbage.onnx", "--emit=nn"], 2, "garbage.onnx: not a readable ONNX model"),
    ("nncc", ["half.onnx", "--emit=nn"], 2, "half.onnx: not a readable ONNX model"),
    ("nncc", ["adir.onnx"], 2, "adir.onnx: is a directory"),
    ("nncc", ["in.npz", "--emit=nn"], 2, "in.npz: not a readable ONNX model"),
    # model contents
    ("nncc", ["dyn.onnx", "--emit=nn"], 2, "dynamic dimension 'batch' (axis 0)"),
    ("nncc", ["zero.onnx", "--emit=nn"], 2, "zero-size dimension"),
    ("nncc", ["huge.onnx", "--emit=nn"], 2, "is too large to represent"),
    ("nncc", ["int.onnx", "--emit=nn"], 2, "element type int64"),
    ("nncc", ["intweight.onnx", "--emit=nn"], 2, "input 'W' is a constant of type int32"),
    ("nncc", ["opset1.onnx", "--emit=nn"], 2, "opset 1 is too old"),
    ("nncc", ["opset99.onnx", "--emit=nn"], 2, "opset 99 is newer than this onnx"),
    ("nncc", ["noout.onnx", "--emit=nn"], 2, "the graph has no outputs"),
    ("nncc", ["cycle.onnx", "--emit=nn"], 2, "topologically sorted"),
    ("nncc", ["dup.onnx", "--emit=nn"], 2, "'y' has been used as output names multiple times"),
    ("nncc", ["einsum.onnx", "--emit=nn"], 2, "node 'e' (Einsum): op Einsum is not supported"),
    ("nncc", ["noinit.onnx", "--emit=nn"], 2, "input 'W' of node"),
    ("nncc", ["floatshape.onnx", "--emit=nn"], 2, "node 'rs' (Reshape): input 1 (shape) 's' has type float32"),
    ("nncc", ["ext.onnx", "--emit=nn"], 2, "initializer 'W' is stored in external data file 'weights.bin'"),
    # --input-shape
    ("nncc", ["dyn.onnx", "--emit=nn", "--input-shape", "x=99999999999999999999x64"], 2, "sizes from 1 to"),
    ("nncc", ["dyn.onnx", "--emit=nn", "--input-shape", "x=2_0x64"], 2, "expected NAME=D0xD1x"),
    ("nncc", ["dyn.onnx", "--emit=nn", "--input-shape", "2x64", "--input-shape", "3x64"], 2, "given twice"),
    ("nncc", ["dyn.onnx", "--emit=nn", "--input-shape", "x=2x64", "--input-shape", "x=3x64"], 2, "'x' is given twice"),
    ("nncc", ["dyn.onnx", "--emit=nn", "--input-shape", "y=2x64"], 2, "the model has no input 'y'"),
    # targets
    ("nncc", ["relu.onnx", "--target=slash.toml"], 2, "slash.toml: name: '../evil' names program files"),
    ("nncc", ["relu.onnx", "--target=energy.toml"], 2, "mac_energy_pj: 1e+308 is more than the simulator supports"),
    ("nncc", ["relu.onnx", "--target=latency.toml"], 2, "dram.latency_ns: 1e+300 is more than"),
    ("nncc", ["relu.onnx", "--target=clock.toml"], 2, "clock.toml: clock_ghz: expected a number, got nan"),
    ("nncc", ["relu.onnx", "--target=cores.toml"], 2, "cores: 0 is impossible"),
    ("nncc", ["relu.onnx", "--target=lanes.toml"], 2, "core.main.lanes: expected an integer, got '16'"),
    ("nncc", ["relu.onnx", "--target=unknown.toml"], 2, "unknown.toml: colour: unknown key"),
    ("nncc", ["relu.onnx", "--target=nokey.toml"], 2, "nokey.toml: cores: missing"),
    ("nncc", ["relu.onnx", "--target=latin1.toml"], 2, "not UTF-8"),
    ("nncc", ["relu.onnx", "--target=nowhere.toml"], 2, "nowhere.toml: cannot read target file"),
    ("nncc", ["mm.onnx", "--target=tinydram.toml", "--program", "tiny"], 2,
     "the program needs 18432 bytes of DRAM, which has 1024 (dram.size_bytes)"),
    # --target-set
    ("nncc", ["relu.onnx", "--target-set", "colour=1"], 2, "--target-set on vector.toml: colour: unknown key"),
    ("nncc", ["relu.onnx", "--target-set", "cores"], 2, "bad override 'cores': expected KEY=VALUE"),
    ("nncc", ["relu.onnx", "--target-set", "cores=many"], 2, "cores: expected an integer, got 'many'"),
    ("nncc", ["relu.onnx", "--target-set", "core=3"], 2, "core: expected a table"),
    ("nncc", ["relu.onnx", "--target-set", "memory.AM=3"], 2, "memory is a list of tables"),
    ("nncc", ["relu.onnx", "--target-set", "name=a/b"], 2, "'a/b' names program files"),
    ("nncc", ["relu.onnx", "--emit=nn", "--target-set", "colour=1"], 2, "colour: unknown key"),
    ("nncc", ["relu.onnx", "--emit=nn", "--target=nosuch"], 2, "unknown target 'nosuch'"),
    # flags that would be ignored, or make no sense
    ("nncc", ["relu.onnx", "--program", "."], 2, "--program '.': give a file prefix"),
    ("nncc", ["relu.onnx", "--seed", "3"], 2, "--seed 3 chooses the random inputs of a run, and nothing runs"),
    ("nncc", ["relu.onnx", "-j", "0"], 2, "argument -j/--jobs: '0': give a number of processes >= 1"),
    ("nncc", ["relu.onnx", "--jobs", "two"], 2, "argument -j/--jobs: 'two': give a number of processes >= 1"),
    ("nncc", ["relu.onnx", "--run", "--seed", "3", "--inputs", "in.npz"], 2, "use one or the other"),
    ("nncc", ["relu.onnx", "--emit=nn", "--inputs", "in.npz"], 2, "--emit=nn stops after that stage: --inputs"),
    ("nncc", ["relu.onnx", "--emit=fused", "--tile-order=naive"], 2, "--tile-order need a full compile"),
    ("nncc", ["relu.onnx", "--target=reference", "--tile-objective=dram"], 2, "--tile-objective needs an accelerator"),
    ("nncc", ["relu.onnx", "--emit=nn", "--pass-plugin", "in.npz"], 2, "pass plugin in.npz: not a Python file"),
    # nncc-opt
    ("nncc-opt", ["blank.mlir"], 2, "blank.mlir: no IR (the input is empty)"),
    ("nncc-opt", ["foo.mlir"], 2, "Operation foo.matmul is not registered"),
    ("nncc-opt", ["intattr.mlir"], 2, "module attribute nn.weights must name the weight file"),
    ("nncc-opt", ["text.mlir"], 2, "notes.npz: not a weight file"),
    ("nncc-opt", ["ints.mlir", "-p", "canonicalize-nn", "-o", "ints-out.mlir"], 2, "weight 'W' has dtype int32"),
    ("nncc-opt", ["shape.mlir"], 2, "weight 'W' has shape [3], but the IR declares [64, 64]"),
    ("nncc-opt", ["lost.mlir", "-p", "canonicalize-nn", "-o", "lost-out.mlir"], 2, "lost.npz: weight file not found"),
    ("nncc-opt", ["relu.onnx"], 2, "relu.onnx: not textual IR"),
    # nncc-run
    ("nncc-run", ["mm.nnbin", "--inputs", "other.npz"], 2, "array 'z' is not an input or weight of the program"),
    ("nncc-run", ["mm.nnbin", "--inputs", "empty.npz"], 2, "empty.npz: has no array for input x"),
    ("nncc-run", ["mm.nnbin", "--expect", "empty.npz"], 2, "has no array for output y: --expect checks every output"),
    ("nncc-run", ["mm.nnbin", "--expect", "strings.npz"], 2, "array 'y' has dtype <U1"),
    ("nncc-run", ["mm.nnbin", "--expect", "in.npz"], 2, "array 'x' is not an output of the program"),
    ("nncc-run", ["mm.nnbin", "--tolerance", "0.1"], 2, "--tolerance applies to the comparison with --expect"),
    ("nncc-run", ["mm.nnbin", "--inputs", "in.npz", "--seed", "1"], 2, "use one or the other"),
    ("nncc-run", ["adir.onnx"], 2, "adir.onnx: is a folder, not a program file"),
    ("nncc-run", ["mm.nnbin", "--target-set", "memory.AM.name=XX"], 2, "the program uses memory AM"),
    ("nncc-run", ["mm.nnbin", "--target-set", "memory.AM.size_bytes=64"], 3, "AM overflow"),
    ("nncc-run", ["mm.nnbin", "--target-set", "name=a b"], 2, "'a b' names program files"),
    # nncc-zoo
    ("nncc-zoo", ["resnet18", "--resolution", "100000"], 2, "resolution 100000 is more than the zoo builds"),
    ("nncc-zoo", ["resnet18", "--batch", "100000"], 2, "is too large an input"),
]


def case_id(case) -> str:
    return f"{case[0]} {' '.join(case[1])}"[:80]


@pytest.mark.parametrize("tool, argv, code, fragment", CASES, ids=[case_id(c) for c in CASES])
def test_bad_input_is_one_line(workspace, monkeypatch, capsys, tool, argv, code, fragment):
    monkeypatch.chdir(workspace)
    before = {p.name: p.stat().st_mtime_ns for p in workspace.iterdir()}
    try:
        got = TOOLS[tool](argv)
    except SystemExit as exit_:  # argparse's own one-line errors
        got = exit_.code
    err = capsys.readouterr().err
    assert got == code, err
    assert fragment in err and len(err.strip().splitlines()) == 1, err
    assert "Traceback" not in err
    assert {p.name: p.stat().st_mtime_ns for p in workspace.iterdir() if p.name in before} == before


@pytest.mark.parametrize("module, argv, fragment", [
    ("nncc.compiler.cli", ["relu.onnx", "--program", ""], "give a file prefix"),
    ("nncc.compiler.opt", ["intattr.mlir"], "must name the weight file"),
    ("nncc.runtime.cli", ["mm.nnbin", "--expect", "strings.npz"], "has dtype <U1"),
])
def test_console_scripts_behave_the_same(workspace, module, argv, fragment):
    done = subprocess.run([sys.executable, "-m", module, *argv], cwd=workspace, capture_output=True, text=True,
                          env={**os.environ, "PYTHONWARNINGS": "ignore"})
    assert done.returncode == 2 and fragment in done.stderr and len(done.stderr.strip().splitlines()) == 1, done.stderr
