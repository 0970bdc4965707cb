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
import re
import sys
from collections.abc import Callable
from dataclasses import dataclass, field
from importlib.metadata import entry_points
from pathlib import Path
from types import ModuleType

from xdsl.context import Context
from xdsl.ir import Dialect
from xdsl.passes import ModulePass
from xdsl.universe import XDSL_UNIVERSE, Universe
from xdsl.utils.arg_spec import ArgSpec, parse_pipeline
from xdsl.utils.exceptions import ArgSpecParseError

from nncc.compiler.pass_manager import did_you_mean
from nncc.compiler.universe import NNCC_UNIVERSE
from nncc.support.errors import NnccError, one_line

PassFactory = Callable[[], type[ModulePass]]
ORIGINS = ("nncc", "plugin", "xdsl")  # where a pass comes from, in `--list-passes` order


@dataclass
class Registry:
    passes: dict[str, PassFactory] = field(default_factory=dict)
    dialects: dict[str, Callable[[], Dialect]] = field(default_factory=dict)
    origins: dict[str, str] = field(default_factory=dict)  # pass name -> one of ORIGINS

    @classmethod
    def default(cls) -> Registry:
        """Everything installed: all universes plus the `nncc.passes` entry points."""
        try:
            universe = Universe.get_multiverse()
        except Exception as error:  # a broken third-party plugin must not hide which one
            raise NnccError(f"cannot load the installed xDSL plugins: {one_line(str(error))}") from None
        registry = cls(dict(universe.all_passes), dict(universe.all_dialects))
        xdsl_passes = XDSL_UNIVERSE.all_passes
        registry.origins = {name: "xdsl" if xdsl_passes.get(name) is factory else "plugin"
                            for name, factory in registry.passes.items()}
        registry.add_universe(NNCC_UNIVERSE, replace=True, origin="nncc")  # even when run from a source tree
        for entry in entry_points(group="nncc.passes"):
            registry.passes[entry.name] = entry.load
            registry.origins[entry.name] = "plugin"
        return registry

    def add_universe(self, universe: Universe, replace: bool = False, origin: str = "plugin") -> None:
        for name, factory in universe.all_passes.items():
            if replace or name not in self.passes:
                self.passes[name] = factory
                self.origins[name] = origin
        for name, factory in universe.all_dialects.items():
            if replace or name not in self.dialects:
                self.dialects[name] = factory

    def add_pass(self, pass_class: type[ModulePass]) -> None:
        self.passes[pass_class.name] = lambda: pass_class
        self.origins[pass_class.name] = "plugin"

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

    def pipeline(self, spec: str, flag: str = "") -> list[ModulePass]:
        """Parse `pass-a,pass-b{opt=1}` into pass instances; errors name `flag`, if given."""
        try:
            return [self.instantiate(pass_spec) for pass_spec in parse_specs(spec)]
        except NnccError as error:
            if not flag:
                raise
            raise NnccError(f"{flag}: {error}") from None

    def instantiate(self, pass_spec: ArgSpec) -> ModulePass:
        pass_class = self.pass_class(pass_spec.name)
        try:
            return pass_class.from_pass_spec(pass_spec)
        except Exception as error:
            raise NnccError(f"pass '{pass_spec.name}': bad options in '{pass_spec}': "
                            f"{one_line(str(error))}") from None

    def pass_class(self, name: str) -> type[ModulePass]:
        """The class of pass `name`, imported on first use."""
        if name not in self.passes:
            raise NnccError(f"unknown pass '{name}'{did_you_mean(name, self.passes)} "
                            "(nncc-opt --list-passes shows them)")
        try:
            return self.passes[name]()
        except Exception as error:
            raise NnccError(f"pass '{name}': cannot load it: {type(error).__name__}: "
                            f"{one_line(str(error))}") from None

    def summary(self, name: str) -> str:
        """The first line of pass `name`'s docstring ('' if it has none)."""
        try:
            pass_class = self.pass_class(name)
        except NnccError as error:
            return f"({error})"
        doc = pass_class.__dict__.get("__doc__") or ""
        if doc.startswith(f"{pass_class.__name__}("):  # the signature @dataclass writes when there is none
            return ""
        return doc.strip().split("\n")[0].strip()

    def listing(self) -> str:
        """`--list-passes`: nncc's passes (pipeline order), then plugins', with their summaries;
        then xDSL's, by name only (importing all ~130 of them to read docstrings takes a second)."""
        sections = []
        for origin, title in zip(ORIGINS, ("nncc passes", "plugin passes", "xDSL passes")):
            names = [name for name in self.passes if self.origins.get(name, "plugin") == origin]
            if origin == "xdsl":
                sections.append("\n".join([f"{title}:", *(f"  {name}" for name in sorted(names))]))
            elif names:
                width = max(map(len, names))
                rows = (f"  {name:<{width}}  {self.summary(name)}".rstrip() for name in names)
                sections.append("\n".join([f"{title}:", *rows]))
        return "\n\n".join(sections)


def parse_specs(spec: str) -> list[ArgSpec]:
    try:
        return list(parse_pipeline(spec))
    except (ArgSpecParseError, Exception) as error:  # ArgSpecParseError is a BaseException
        raise NnccError(f"bad pass pipeline '{spec}': {pipeline_syntax_error(error)}") from None


def pipeline_syntax_error(error: BaseException) -> str:
    """xDSL's multi-line pipeline syntax error as `column N: reason`."""
    lines = [line.strip() for line in str(error).splitlines() if line.strip()]
    where = re.search(r"pass-pipeline:\d+:(\d+)", str(error))
    if not (lines and where):
        return one_line(str(error))
    return f"column {where.group(1)}: {lines[-1][:1].lower()}{lines[-1][1:]}"


def import_plugin(spec: str) -> ModuleType:
    path = Path(spec)
    try:
        if spec.endswith(".py") or path.exists():
            if not path.is_file():
                raise NnccError(f"pass plugin {spec}: no such file")
            name = f"nncc_plugin_{path.stem}"
            module_spec = importlib.util.spec_from_file_location(name, path)
            if module_spec is None:
                raise NnccError(f"pass plugin {spec}: not a Python file (give a .py file or a module name)")
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
