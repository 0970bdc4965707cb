"""Inputs for a run, and the comparison of its outputs with onnxruntime.

The criterion (docs/design.md, "Verification"): an output passes when its maximum
absolute error is at most `RELATIVE_TOLERANCE` x max|expected| (exactly equal
when the expected output is all zeros).
"""

from __future__ import annotations

import zipfile
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from nncc.support.errors import NnccError, one_line
from nncc.support.user_files import write_atomically

RELATIVE_TOLERANCE = 1e-4


def random_inputs(signature: dict[str, tuple[int, ...]], seed: int) -> dict[str, np.ndarray]:
    """Standard-normal float32 inputs, reproducible from `seed`."""
    rng = np.random.default_rng(seed)
    return {name: rng.standard_normal(shape, dtype=np.float32) for name, shape in signature.items()}


def load_inputs(path: Path, signature: dict[str, tuple[int, ...]]) -> dict[str, np.ndarray]:
    """Inputs from an `.npz` whose keys are the model's input names."""
    arrays = read_npz(path, "--inputs")
    inputs = {}
    for name, shape in signature.items():
        if name not in arrays:
            raise NnccError(f"{path}: has no array '{name}' (the model's inputs: {', '.join(signature)})")
        array = arrays[name]
        if tuple(array.shape) != tuple(shape):
            raise NnccError(f"{path}: input '{name}' has shape {list(array.shape)}, the model expects {list(shape)}")
        if not np.issubdtype(array.dtype, np.floating):
            raise NnccError(f"{path}: input '{name}' has dtype {array.dtype}, the model expects float32")
        inputs[name] = array.astype(np.float32)
    extra = sorted(set(arrays) - set(signature))
    if extra:
        raise NnccError(f"{path}: arrays {', '.join(extra)} are not inputs of the model")
    return inputs


def read_npz(path: Path, what: str) -> dict[str, np.ndarray]:
    """The arrays of an `.npz` archive; a single-array `.npy`, another file or a broken archive is
    a one-line error naming `what` (--inputs, --expect)."""
    try:
        with open(path, "rb") as file:
            magic = file.read(6)
            if magic.startswith(b"\x93NUMPY"):
                raise NnccError(f"{path}: {what} must be an .npz archive of named arrays "
                                "(np.savez(path, name=array)), not a single .npy array")
            if not magic.startswith(b"PK"):
                raise NnccError(f"{path}: {what} is not an .npz archive (write it with np.savez(path, name=array))")
            file.seek(0)
            with np.load(file, allow_pickle=False) as archive:
                return {name: archive[name] for name in archive.files}
    except FileNotFoundError:
        raise NnccError(f"{path}: no such {what} file") from None
    except IsADirectoryError:
        raise NnccError(f"{path}: {what} is a folder, not an .npz file") from None
    except (OSError, ValueError, EOFError, zipfile.BadZipFile) as error:
        raise NnccError(f"{path}: {what} is not a readable .npz archive ({one_line(str(error))})") from None


def save_outputs(path: Path, outputs: dict[str, np.ndarray]) -> None:
    write_atomically(path, lambda file: np.savez(file, **outputs))


def run_onnxruntime(model_path: Path, inputs: dict[str, np.ndarray]) -> dict[str, np.ndarray]:
    """The expected outputs, from onnxruntime on the user's original file."""
    try:
        import onnxruntime
    except ImportError:
        raise NnccError("--check needs onnxruntime: pip install 'nncc[test]' (or onnxruntime)") from None
    options = onnxruntime.SessionOptions()
    options.log_severity_level = 3
    try:
        session = onnxruntime.InferenceSession(str(model_path), options, providers=["CPUExecutionProvider"])
        names = [o.name for o in session.get_outputs()]
        return dict(zip(names, session.run(names, inputs)))
    except Exception as error:
        raise NnccError(f"{model_path}: onnxruntime cannot run the model for --check: "
                        f"{' '.join(str(error).split())}") from None


@dataclass
class OutputCheck:
    name: str
    max_abs_err: float
    max_rel_err: float
    scale: float
    passed: bool

    def summary(self) -> str:
        verdict = "ok" if self.passed else "MISMATCH"
        return (f"{self.name}: {verdict}: max abs err {self.max_abs_err:.3g}, "
                f"max rel err {self.max_rel_err:.3g} (output scale {self.scale:.3g}, "
                f"tolerance {RELATIVE_TOLERANCE:g} x scale)")


def compare_output(name: str, actual: np.ndarray, expected: np.ndarray) -> OutputCheck:
    expected = np.asarray(expected, dtype=np.float32)
    actual = np.asarray(actual, dtype=np.float32)
    if actual.shape != expected.shape:
        return OutputCheck(name, float("inf"), float("inf"), 0.0, False)
    finite = np.isfinite(expected)
    scale = float(np.max(np.abs(expected[finite]))) if finite.any() else 0.0
    if not np.array_equal(np.isnan(actual), np.isnan(expected)):
        max_abs = float("inf")
    else:
        same = (actual == expected) | (np.isnan(actual) & np.isnan(expected))
        error = np.where(same, 0.0, np.abs(actual.astype(np.float64) - expected.astype(np.float64)))
        max_abs = float(error.max()) if error.size else 0.0
    max_rel = max_abs / scale if scale else (0.0 if max_abs == 0 else float("inf"))
    return OutputCheck(name, max_abs, max_rel, scale, max_abs <= RELATIVE_TOLERANCE * scale)


def compare(actual: dict[str, np.ndarray], expected: dict[str, np.ndarray]) -> list[OutputCheck]:
    return [compare_output(name, actual[name], expected[name]) for name in expected]


def check_summary(checks: list[OutputCheck]) -> dict:
    """The report's `check` field."""
    return {
        "passed": all(c.passed for c in checks),
        "max_abs_err": max((c.max_abs_err for c in checks), default=0.0),
        "max_rel_err": max((c.max_rel_err for c in checks), default=0.0),
        "outputs": {c.name: {"max_abs_err": c.max_abs_err, "max_rel_err": c.max_rel_err,
                             "scale": c.scale, "passed": c.passed} for c in checks},
    }
