"""Running passes the MLIR way: verify after each, print IR before/after on request.

    // -----// IR Dump After canonicalize-nn //----- //
    builtin.module { ... }

Dumps go to stderr (as in `mlir-opt`), so stdout keeps the tool's real output.
"""

from __future__ import annotations

import sys
from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field
from typing import IO

from xdsl.context import Context
from xdsl.dialects.builtin import ModuleOp
from xdsl.passes import ModulePass
from xdsl.utils.exceptions import DiagnosticException, PassFailedException, VerifyException

from nncc.compiler.errors import NnccError, one_line


@dataclass
class IRPrinting:
    """Which IR dumps to print: `--print-ir-after-all`, `--print-ir-after=NAME`, `--print-ir-before=NAME`."""

    after_all: bool = False
    before_all: bool = False
    after: set[str] = field(default_factory=set)
    before: set[str] = field(default_factory=set)
    stream: IO[str] = field(default_factory=lambda: sys.stderr)

    def any(self) -> bool:
        return bool(self.after_all or self.before_all or self.after or self.before)

    def dump(self, when: str, name: str, module: ModuleOp) -> None:
        print(f"// -----// IR Dump {when} {name} //----- //", file=self.stream)
        print(module, file=self.stream)
        self.stream.flush()

    def before_pass(self, name: str, module: ModuleOp) -> None:
        if self.before_all or name in self.before:
            self.dump("Before", name, module)

    def after_pass(self, name: str, module: ModuleOp) -> None:
        if self.after_all or name in self.after:
            self.dump("After", name, module)


def verify(module: ModuleOp, after: str) -> None:
    try:
        module.verify()
    except (VerifyException, DiagnosticException) as error:
        raise NnccError(f"IR verification failed after {after}: {one_line(str(error))}") from None


def run_passes(module: ModuleOp, passes: Sequence[ModulePass], ctx: Context,
               printing: IRPrinting | None = None) -> None:
    """Apply `passes` in order, verifying the IR after each one."""
    printing = printing or IRPrinting()
    for module_pass in passes:
        printing.before_pass(module_pass.name, module)
        try:
            module_pass.apply(ctx, module)
        except NnccError:
            raise
        except PassFailedException as error:
            raise NnccError(f"pass {module_pass.name} failed: {one_line(str(error))}") from None
        verify(module, f"pass {module_pass.name}")
        printing.after_pass(module_pass.name, module)


def check_pass_names(names: Iterable[str], known: Iterable[str], flag: str) -> None:
    unknown = sorted(set(names) - set(known))
    if unknown:
        raise NnccError(f"{flag}: unknown pass {', '.join(unknown)}")
