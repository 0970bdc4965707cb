"""The weight store: numpy arrays that the IR references by name.

Weights never live in xDSL attributes (millions of Python floats are far too
slow); `nn.weight "name"` ops refer to entries here, like MLIR's `dense_resource`.
A module says where its store is saved with the attribute `nn.weights`, a path
relative to the IR file:

    builtin.module attributes {nn.weights = "resnet18.nn.weights.npz"} { ... }

In memory, a store is attached to its module with `attach`/`store_of`, so passes
that create or read weights (BatchNorm folding, CP decomposition) find it.
"""

from __future__ import annotations

import re
import weakref
import zipfile
from collections.abc import Iterator
from pathlib import Path

import numpy as np
from xdsl.dialects.builtin import ModuleOp, StringAttr

from nncc.support.errors import NnccError, one_line
from nncc.support.user_files import write_atomically

WEIGHTS_ATTR = "nn.weights"


class WeightStore:
    """Named float arrays, loaded lazily from an `.npz` file when there is one."""

    def __init__(self, arrays: dict[str, np.ndarray] | None = None, path: Path | None = None):
        self._arrays: dict[str, np.ndarray] = dict(arrays or {})
        self._file: np.lib.npyio.NpzFile | None = None
        self.path = path
        self.dirty = False

    def _saved(self) -> list[str]:
        """Names in the backing file, opened on first use."""
        if self.path is None:
            return []
        if self._file is None:
            try:
                with open(self.path, "rb") as file:
                    if not file.read(4).startswith(b"PK"):
                        raise NnccError(f"{self.path}: not a weight file (weights are an .npz archive)")
                self._file = np.load(self.path, allow_pickle=False)
            except FileNotFoundError:
                raise NnccError(f"{self.path}: weight file not found") from None
            except (OSError, ValueError, zipfile.BadZipFile) as error:
                raise NnccError(f"{self.path}: not a readable weight file ({one_line(str(error))})") from None
        return self._file.files

    def names(self) -> list[str]:
        return list(self._arrays) + [n for n in self._saved() if n not in self._arrays]

    def __contains__(self, name: str) -> bool:
        return name in self._arrays or name in self._saved()

    def __getitem__(self, name: str) -> np.ndarray:
        if name not in self._arrays:
            if name not in self._saved():
                where = f" in {self.path}" if self.path else ""
                raise NnccError(f"weight '{name}' is not in the weight store{where}")
            self._arrays[name] = self._read(name)
        return self._arrays[name]

    def _read(self, name: str) -> np.ndarray:
        """A saved array as float32; anything else is a one-line error naming the file and the weight."""
        try:
            array = self._file[name]
        except (OSError, ValueError, EOFError, zipfile.BadZipFile) as error:
            raise NnccError(f"{self.path}: weight '{name}' is unreadable ({one_line(str(error))})") from None
        if not np.issubdtype(array.dtype, np.floating):
            raise NnccError(f"{self.path}: weight '{name}' has dtype {array.dtype}; weights are float32")
        return array.astype(np.float32, copy=False)

    def __iter__(self) -> Iterator[str]:
        return iter(self.names())

    def __len__(self) -> int:
        return len(self.names())

    def add(self, name: str, array: np.ndarray) -> str:
        """Store `array` under `name`, or under `name.1`, `name.2`... when taken. Returns the name used."""
        unique, suffix = name, 0
        while unique in self:
            suffix += 1
            unique = f"{name}.{suffix}"
        self._arrays[unique] = np.asarray(array).astype(np.float32, order="C", copy=False)
        self.dirty = True
        return unique

    def replace(self, name: str, array: np.ndarray) -> None:
        self._arrays[name] = np.asarray(array).astype(np.float32, order="C", copy=False)
        self.dirty = True

    def save(self, path: Path, keep: set[str] | None = None) -> None:
        """Write the arrays (only `keep` when given) as an uncompressed `.npz`."""
        arrays = {n: self[n] for n in self.names() if keep is None or n in keep}
        # Everything is in memory before writing: `path` may replace the file we read from.
        write_atomically(path, lambda file: np.savez(file, **arrays))
        if self._file is not None:
            self._file.close()
        self._arrays, self._file = arrays, None
        self.path, self.dirty = path, False

    def nbytes(self) -> int:
        return sum(self[n].nbytes for n in self.names())


_STORES: weakref.WeakKeyDictionary[ModuleOp, WeightStore] = weakref.WeakKeyDictionary()


def attach(module: ModuleOp, store: WeightStore) -> None:
    _STORES[module] = store


def store_of(module: ModuleOp, required_by: str = "") -> WeightStore:
    """The weight store of `module`: attached in memory, or opened from its `nn.weights` file."""
    if module in _STORES:
        return _STORES[module]
    attr = module.attributes.get(WEIGHTS_ATTR)
    if attr is None:
        who = f"{required_by} needs weight values, but " if required_by else ""
        raise NnccError(f"{who}the module names no weight file (attribute {WEIGHTS_ATTR})")
    return open_beside(module, Path.cwd())


def open_beside(module: ModuleOp, ir_dir: Path) -> WeightStore:
    """Attach the store named by the module's `nn.weights` (relative to `ir_dir`); opened lazily."""
    attr = module.attributes[WEIGHTS_ATTR]
    if not isinstance(attr, StringAttr) or not attr.data:
        raise NnccError(f"module attribute {WEIGHTS_ATTR} must name the weight file, e.g. "
                        f'{WEIGHTS_ATTR} = "model.nn.weights.npz", not {attr}')
    store = WeightStore(path=ir_dir / attr.data)
    attach(module, store)
    return store


def check_saved_shapes(module: ModuleOp, store: WeightStore) -> None:
    """Every `nn.weight` of `module` is in the store's file with the shape its type declares (the
    arrays' headers are read, not the arrays)."""
    from nncc.dialects.nn import WeightOp, shape_of

    saved = saved_shapes(store.path)
    for op in module.walk():
        if isinstance(op, WeightOp) and op.ref.data in saved:
            declared, shape = tuple(shape_of(op.result)), saved[op.ref.data]
            if shape is not None and shape != declared:
                raise NnccError(f"{store.path}: weight '{op.ref.data}' has shape {list(shape)}, but the IR "
                                f"declares {list(declared)}")


def saved_shapes(path: Path) -> dict[str, tuple[int, ...] | None]:
    """The shape of every array of an `.npz` from its header (None when the header is not readable)."""
    shapes: dict[str, tuple[int, ...] | None] = {}
    try:
        with zipfile.ZipFile(path) as archive:
            for info in archive.infolist():
                with archive.open(info) as member:
                    try:
                        version = np.lib.format.read_magic(member)
                        read = np.lib.format.read_array_header_1_0 if version == (1, 0) else \
                            np.lib.format.read_array_header_2_0
                        shapes[info.filename.removesuffix(".npy")] = tuple(read(member)[0])
                    except ValueError:
                        shapes[info.filename.removesuffix(".npy")] = None
    except (OSError, zipfile.BadZipFile) as error:
        raise NnccError(f"{path}: not a readable weight file ({one_line(str(error))})") from None
    return shapes


def weights_path_for(ir_path: Path) -> Path:
    """`model.nn.mlir` -> `model.nn.weights.npz`."""
    stem = ir_path.name[: -len(ir_path.suffix)] if ir_path.suffix else ir_path.name
    return ir_path.with_name(f"{stem}.weights.npz")


def save_beside(module: ModuleOp, ir_path: Path) -> Path | None:
    """Save the module's weights beside `ir_path` and point `nn.weights` at them.

    Only the weights the IR still references are written.
    """
    if module not in _STORES and WEIGHTS_ATTR not in module.attributes:
        return None
    from nncc.dialects.nn import WeightOp

    store = store_of(module)
    used = {op.ref.data for op in module.walk() if isinstance(op, WeightOp)}
    path = weights_path_for(ir_path)
    store.save(path, keep=used)
    module.attributes[WEIGHTS_ATTR] = StringAttr(path.name)
    return path


def sanitize(name: str) -> str:
    """A readable SSA name hint for an ONNX name: `layer1.0/conv1` -> `layer1_0_conv1`,
    `features.0` -> `features.0` (xDSL drops a trailing `_<digits>` from name hints, which would
    give every `features.N` layer the same name)."""
    cleaned = re.sub(r"[^A-Za-z0-9_]", "_", name).strip("_")
    if not cleaned or cleaned[0].isdigit():
        cleaned = "v" + cleaned
    return re.sub(r"_(\d+)$", r".\1", cleaned)
