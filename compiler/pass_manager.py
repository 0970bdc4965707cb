"""Running passes the MLIR way: verify after each, print IR before/after on request.

    // -----// IR Dump After canonicalize-nn //----- //
    builtin.module { ... }

Dumps go to stderr (as in `mlir-opt`), so stdout keeps the tool's real output.
Whatever a pass raises becomes one `NnccError` line naming the pass (`apply_pass`).
lower-to-isa leaves its isa ops unbuilt (`isa_module.defer_program`); `built` builds them before
a dump, before the next pass, and before a tool prints or writes the module.
"""

from __future__ import annotations

import difflib
import re
import sys
import traceback
from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import IO

from xdsl.context import Context
from xdsl.dialects.builtin import ModuleOp
from xdsl.passes import ModulePass
from xdsl.utils.exceptions import ArgSpecParseError, DiagnosticException

from nncc.support import progress
from nncc.support.errors import NnccError, one_line


NUMBERED_HINT = re.compile(r"_(\d+)$")


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
        print(module_text(module), file=self.stream)
        self.stream.flush()

    def before_pass(self, name: str, module: ModuleOp) -> None:
        if self.before_all or name in self.before:
            self.dump("Before", name, module)

    def after_pass(self, name: str, module: ModuleOp) -> None:
        if self.after_all or name in self.after:
            self.dump("After", name, module)

    def check_names(self, known: Iterable[str]) -> None:
        known = set(known)
        check_pass_names(self.after, known, "--print-ir-after")
        check_pass_names(self.before, known, "--print-ir-before")


def built(module: ModuleOp) -> ModuleOp:
    """`module` with the isa ops lower-to-isa deferred built and verified (what is printed,
    written or handed to a pass is the whole IR); any other module as it is."""
    if "isa.deferred" in module.attributes:  # isa_module.DEFERRED, named here so that nothing is imported
        from nncc.compiler.codegen.isa_module import build_deferred

        with progress.stage("building isa ops"):
            build_deferred(module)
        verify(module, "building the isa ops")
    return module


def module_text(module: ModuleOp) -> str:
    """The whole IR as text that parses back: `built`, then printed with every SSA name unique.

    xDSL's printer names the n-th value with a hint `h` `h_n`, and a hint setter strips one
    `_<digits>` suffix, so a hint made as `g_1_2` is kept as `g_1` and prints as `%g_1`, the name
    the printer gives the second value hinted `g`. For the printing only (a dropout's mask is keyed
    by its hint), such a hint's last `_` becomes a `.`; no printed name can then collide:

        %g, %g_1, %g.1 = fused.batch_norm_factors ...    // hints g, g, g_1
    """
    built(module)
    values = (value for op in module.walk()
              for value in (*op.results, *(arg for region in op.regions for block in region.blocks
                                           for arg in block.args)))
    clashing = [(value, value.name_hint) for value in values
                if value.name_hint and NUMBERED_HINT.search(value.name_hint)]
    for value, hint in clashing:
        value.name_hint = NUMBERED_HINT.sub(r".\1", hint)
    try:
        return str(module)
    finally:
        for value, hint in clashing:
            value._name = hint  # as it was: the setter would strip the `_<digits>` again


def verify(module: ModuleOp, after: str) -> None:
    try:
        module.verify()
    except Exception as error:  # VerifyException, or a bug in an op's verifier
        raise NnccError(f"IR verification failed after {after}: {reason(error)}") from None


def run_passes(module: ModuleOp, passes: Sequence[ModulePass], ctx: Context,
               printing: IRPrinting | None = None) -> None:
    """Apply `passes` in order, verifying the IR after each one."""
    printing = printing or IRPrinting()
    for module_pass in passes:
        built(module)  # a pass after lower-to-isa reads its isa ops
        printing.before_pass(module_pass.name, module)
        apply_pass(module_pass, ctx, module)
        verify(module, f"pass {module_pass.name}")
        printing.after_pass(module_pass.name, module)


def apply_pass(module_pass: ModulePass, ctx: Context, module: ModuleOp) -> None:
    """Run one pass; whatever it raises becomes one line naming it. nncc's own errors already
    name the op and pass through; KeyboardInterrupt and SystemExit are not errors of the pass."""
    try:
        module_pass.apply(ctx, module)
    except NnccError:
        raise
    except (Exception, ArgSpecParseError) as error:  # a pass parsing a pipeline may raise the latter
        raise NnccError(f"pass {module_pass.name} failed: {reason(error)}") from None


def reason(error: BaseException) -> str:
    """One line for a failure: xDSL's diagnostics as they are (PassFailedException, mlir-opt's
    errors...); anything else, a bug more likely than bad input, with its type and where it was raised."""
    message = shortened(one_line(str(error)))
    if isinstance(error, DiagnosticException) and message:
        return message
    if isinstance(error, MemoryError):
        return "out of memory (MemoryError)"
    frames = traceback.extract_tb(error.__traceback__)
    where = f" (raised at {Path(frames[-1].filename).name}:{frames[-1].lineno})" if frames else ""
    return f"{type(error).__name__}{': ' if message else ''}{message}{where}"


def shortened(message: str, limit: int = 400) -> str:
    """Some messages hold a whole module; keep its start and its end, which says what is wrong."""
    if len(message) <= limit:
        return message
    return f"{message[:limit // 3]} ... {message[-(limit - limit // 3 - 5):]}"


def check_pass_names(names: Iterable[str], known: Iterable[str], flag: str) -> None:
    known = set(known)
    unknown = sorted(set(names) - known)
    if unknown:
        raise NnccError(f"{flag}: unknown pass {', '.join(unknown)}{did_you_mean(unknown[0], known)}")


def did_you_mean(name: str, known: Iterable[str]) -> str:
    close = difflib.get_close_matches(name, list(known), n=1)
    return f"; did you mean '{close[0]}'?" if close else ""
