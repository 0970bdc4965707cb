"""Where passes and dialects come from: nncc, xDSL, and users' plugins.

- every package that publishes an `xdsl.universe` entry point (xDSL itself, nncc,
  a user's package) contributes its dialects and passes;
- the `nncc.passes` entry-point group maps a pass name to a `ModulePass` class;
- `--pass-plugin FILE_OR_MODULE` imports a Python file or module and registers
  every `ModulePass` subclass it defines (and its `UNIVERSE`, if it has one).
"""

from __future__ import annotations

import importlib
import importlib.util
import inspect
import sys
from collections.abc import Callable
from dataclasses import dataclass, field
from importlib.metadata import entry_points
from pathlib import Path
from types import ModuleType

from xdsl.context import Context
from xdsl.ir import Dialect
from xdsl.passes import ModulePass
from xdsl.universe import Universe
from xdsl.utils.arg_spec import parse_pipeline

from nncc.compiler.errors import NnccError, one_line
from nncc.compiler.universe import NNCC_UNIVERSE

PassFactory = Callable[[], type[ModulePass]]


@dataclass
class Registry:
    passes: dict[str, PassFactory] = field(default_factory=dict)
    dialects: dict[str, Callable[[], Dialect]] = field(default_factory=dict)

    @classmethod
    def default(cls) -> Registry:
        """Everything installed: all universes plus the `nncc.passes` entry points."""
        try:
            universe = Universe.get_multiverse()
        except Exception as error:  # a broken third-party plugin must not hide which one
            raise NnccError(f"cannot load the installed xDSL plugins: {one_line(str(error))}") from None
        registry = cls(dict(universe.all_passes), dict(universe.all_dialects))
        registry.add_universe(NNCC_UNIVERSE, replace=True)  # present even when run from a source tree
        for entry in entry_points(group="nncc.passes"):
            registry.passes[entry.name] = entry.load
        return registry

    def add_universe(self, universe: Universe, replace: bool = False) -> None:
        for name, factory in universe.all_passes.items():
            if replace or name not in self.passes:
                self.passes[name] = factory
        for name, factory in universe.all_dialects.items():
            if replace or name not in self.dialects:
                self.dialects[name] = factory

    def add_pass(self, pass_class: type[ModulePass]) -> None:
        self.passes[pass_class.name] = lambda: pass_class

    def load_plugin(self, spec: str) -> list[str]:
        """Import a plugin (a .py file or a module name); returns the pass names it added."""
        module = import_plugin(spec)
        added = []
        universe = getattr(module, "UNIVERSE", None)
        if isinstance(universe, Universe):
            self.add_universe(universe, replace=True)
            added += list(universe.all_passes)
        for _, value in inspect.getmembers(module, inspect.isclass):
            if issubclass(value, ModulePass) and value.__module__ == module.__name__ and getattr(value, "name", ""):
                self.add_pass(value)
                added.append(value.name)
        if not added:
            raise NnccError(f"pass plugin {spec}: defines no ModulePass subclass with a name")
        return added

    def context(self) -> Context:
        """A context that loads every known dialect on first use."""
        ctx = Context()
        for name, factory in self.dialects.items():
            ctx.register_dialect(name, factory)
        return ctx

    def pipeline(self, spec: str) -> list[ModulePass]:
        """Parse `pass-a,pass-b{opt=1}` into pass instances."""
        try:
            specs = list(parse_pipeline(spec))
        except Exception as error:
            raise NnccError(f"bad pass pipeline '{spec}': {one_line(str(error))}") from None
        passes = []
        for pass_spec in specs:
            if pass_spec.name not in self.passes:
                raise NnccError(f"unknown pass '{pass_spec.name}' (nncc-opt --list-passes shows them)")
            try:
                passes.append(self.passes[pass_spec.name]().from_pass_spec(pass_spec))
            except Exception as error:
                raise NnccError(f"pass '{pass_spec.name}': bad options: {one_line(str(error))}") from None
        return passes


def import_plugin(spec: str) -> ModuleType:
    path = Path(spec)
    try:
        if spec.endswith(".py") or path.exists():
            if not path.is_file():
                raise NnccError(f"pass plugin {spec}: no such file")
            name = f"nncc_plugin_{path.stem}"
            module_spec = importlib.util.spec_from_file_location(name, path)
            module = importlib.util.module_from_spec(module_spec)
            sys.modules[name] = module
            module_spec.loader.exec_module(module)
            return module
        return importlib.import_module(spec)
    except NnccError:
        raise
    except ModuleNotFoundError as error:
        raise NnccError(f"pass plugin {spec}: {error}") from None
    except Exception as error:
        raise NnccError(f"pass plugin {spec}: failed to load: {type(error).__name__}: {one_line(str(error))}") from None
