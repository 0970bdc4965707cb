"""The package layering (docs/pipeline.md, "Layering"), checked on the source.

Every `.py` file of nncc's packages is parsed with `ast`; each `import` and `from ... import`,
at the top of a module or inside a function, becomes an edge of the module import graph
(`from package import submodule` is an edge to the submodule; imports under `if TYPE_CHECKING:`
never run and are left out). Two rules hold:

- the machine (`nncc.runtime`) and the shared infrastructure (`nncc.support`) import nothing of
  the compiler (`nncc.compiler`, `nncc.passes`), nor anything of the dialects;
- there is no import cycle among nncc's modules.
"""

from __future__ import annotations

import ast
import tomllib
from pathlib import Path

import networkx as nx

ROOT = Path(__file__).resolve().parent.parent

LOWER_PACKAGES = ("nncc.support", "nncc.runtime")
"""Packages below the dialects: the shared infrastructure and the machine."""

UPPER_PACKAGES = ("nncc.dialects", "nncc.compiler", "nncc.passes")
"""What the lower packages must not import."""


def package_dirs() -> dict[str, Path]:
    """Package name -> its directory, from pyproject.toml's `package-dir`."""
    pyproject = tomllib.loads((ROOT / "pyproject.toml").read_text())
    return {name: ROOT / path for name, path in pyproject["tool"]["setuptools"]["package-dir"].items()}


def module_files() -> dict[str, Path]:
    """Dotted module name -> its file, for every `.py` file directly in a package directory."""
    modules = {}
    for package, folder in package_dirs().items():
        for path in sorted(folder.glob("*.py")):
            modules[package if path.stem == "__init__" else f"{package}.{path.stem}"] = path
    return modules


def within(module: str, package: str) -> bool:
    return module == package or module.startswith(package + ".")


def is_type_checking(node: ast.AST) -> bool:
    """`if TYPE_CHECKING:` (or `typing.TYPE_CHECKING`): its imports are for type checkers only."""
    test = node.test if isinstance(node, ast.If) else None
    return (isinstance(test, ast.Name) and test.id == "TYPE_CHECKING") or (
        isinstance(test, ast.Attribute) and test.attr == "TYPE_CHECKING")


def executed_nodes(tree: ast.AST):
    """Every node of `tree`, at any depth, except the bodies of `if TYPE_CHECKING:` (never run)."""
    stack = [tree]
    while stack:
        node = stack.pop()
        yield node
        if is_type_checking(node):
            stack.extend(node.orelse)
        else:
            stack.extend(ast.iter_child_nodes(node))


def imported_modules(module: str, path: Path, modules: dict[str, Path]) -> set[str]:
    """The nncc modules that `module` imports anywhere in its file."""
    is_package = path.stem == "__init__"
    found: set[str] = set()

    def known(name: str) -> str | None:
        """The longest prefix of `name` that is an nncc module."""
        parts = name.split(".")
        for end in range(len(parts), 0, -1):
            candidate = ".".join(parts[:end])
            if candidate in modules:
                return candidate
        return None

    for node in executed_nodes(ast.parse(path.read_text(), filename=str(path))):
        if isinstance(node, ast.Import):
            for alias in node.names:
                if (target := known(alias.name)) is not None:
                    found.add(target)
        elif isinstance(node, ast.ImportFrom):
            if node.level:
                base = module.split(".") if is_package else module.split(".")[:-1]
                base = base[: len(base) - (node.level - 1)]
                source = ".".join(base + ([node.module] if node.module else []))
            else:
                source = node.module or ""
            for alias in node.names:
                # `from package import submodule` imports the submodule; otherwise a name of `source`
                if f"{source}.{alias.name}" in modules:
                    found.add(f"{source}.{alias.name}")
                elif (target := known(source)) is not None:
                    found.add(target)
    found.discard(module)
    return found


def import_graph() -> nx.DiGraph:
    modules = module_files()
    graph = nx.DiGraph()
    graph.add_nodes_from(modules)
    for module, path in modules.items():
        for target in imported_modules(module, path, modules):
            graph.add_edge(module, target)
    return graph


def test_the_packages_are_found():
    modules = module_files()
    for package in ("nncc.support", "nncc.runtime", "nncc.dialects", "nncc.compiler",
                    "nncc.compiler.codegen", "nncc.passes"):
        assert package in modules, f"{package} is not in pyproject.toml's package-dir"
    assert "nncc.runtime.interpreter" in modules


def test_the_machine_does_not_import_the_compiler():
    graph = import_graph()
    wrong = sorted(
        f"{module} imports {target}"
        for module, target in graph.edges
        if any(within(module, low) for low in LOWER_PACKAGES)
        and any(within(target, high) for high in UPPER_PACKAGES)
    )
    assert not wrong, "a lower layer imports a higher one:\n  " + "\n  ".join(wrong)


def test_support_does_not_import_the_machine():
    graph = import_graph()
    wrong = sorted(
        f"{module} imports {target}"
        for module, target in graph.edges
        if within(module, "nncc.support") and not within(target, "nncc.support")
    )
    assert not wrong, "nncc.support imports a higher layer:\n  " + "\n  ".join(wrong)


def test_no_import_cycles():
    graph = import_graph()
    cycles = []
    for component in nx.strongly_connected_components(graph):
        if len(component) > 1:
            cycle = nx.find_cycle(graph.subgraph(component))
            cycles.append(" -> ".join([edge[0] for edge in cycle] + [cycle[0][0]])
                          + f" ({len(component)} modules in the cycle's strongly connected component)")
    assert not cycles, "import cycles among nncc modules:\n  " + "\n  ".join(sorted(cycles))


def test_the_graph_sees_function_level_and_submodule_imports(tmp_path):
    """The graph builder itself: a function-level `from package import submodule` is an edge."""
    (tmp_path / "a.py").write_text("def f():\n    from nncc.x import b\n    from . import c\n")
    modules = {"nncc.x.a": tmp_path / "a.py", "nncc.x.b": tmp_path / "b.py", "nncc.x.c": tmp_path / "c.py",
               "nncc.x": tmp_path / "__init__.py"}
    assert imported_modules("nncc.x.a", tmp_path / "a.py", modules) == {"nncc.x.b", "nncc.x.c"}
    (tmp_path / "b.py").write_text("from typing import TYPE_CHECKING\nif TYPE_CHECKING:\n    from nncc.x import a\n"
                                   "import nncc.x.c as c\n")
    assert imported_modules("nncc.x.b", tmp_path / "b.py", modules) == {"nncc.x.c"}
