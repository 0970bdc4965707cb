"""Errors a user sees: one line, no traceback.

Every stage raises `NnccError` (or a subclass) for bad input; the command-line
tools catch it, print ``<tool>: error: <message>`` on stderr and exit 2.
Simulated-machine faults are `runtime` business and exit 3.
"""

from __future__ import annotations

import os
import sys
from collections.abc import Callable
from functools import wraps
from typing import TypeVar

EXIT_BAD_INPUT = 2


class NnccError(Exception):
    """Bad input: a file, node, op or option the compiler cannot accept.

    The message must name what is wrong (file, node, op, memory) and why, in one line.
    """


F = TypeVar("F", bound=Callable[..., int])


def one_line(message: str) -> str:
    """Fold a message onto one line (tracebacks and multi-line library errors included)."""
    return " ".join(str(message).split())


def report_errors(tool: str) -> Callable[[F], F]:
    """Decorate a `main()` so that `NnccError` becomes one stderr line and exit code 2."""

    def decorate(main: F) -> F:
        @wraps(main)
        def wrapped(*args, **kwargs) -> int:
            try:
                return main(*args, **kwargs)
            except NnccError as error:
                print(f"{tool}: error: {one_line(str(error))}", file=sys.stderr)
                return EXIT_BAD_INPUT
            except BrokenPipeError:  # `nncc ... | head`: the reader left, as with any Unix tool
                os.dup2(os.open(os.devnull, os.O_WRONLY), sys.stdout.fileno())
                return 0
            except KeyboardInterrupt:
                print(f"{tool}: interrupted", file=sys.stderr)
                return 130
            except MemoryError as error:  # numpy's says how much it wanted
                detail = f" ({one_line(str(error))})" if str(error) else ""
                print(f"{tool}: error: out of memory{detail}", file=sys.stderr)
                return EXIT_BAD_INPUT

        return wrapped  # type: ignore[return-value]

    return decorate
