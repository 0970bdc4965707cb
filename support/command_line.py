"""What every nncc tool's command line shares: one-line usage errors, --version, --quiet, --seed.

This module imports nothing heavy, so `--help`, `--version` and usage errors answer at once.
"""

from __future__ import annotations

import argparse
import math
import os


class ArgumentParser(argparse.ArgumentParser):
    """argparse, but usage errors are one line and exit 2."""

    def error(self, message: str):
        self.exit(2, f"{self.prog}: error: {message}\n")


def seed(text: str) -> int:
    """`--seed`: a non-negative integer (numpy's generators refuse negative seeds)."""
    try:
        value = int(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"{text!r} is not an integer") from None
    if value < 0:
        raise argparse.ArgumentTypeError(f"{value} is negative (seeds are integers >= 0)")
    return value


def nncc_version() -> str:
    from importlib.metadata import PackageNotFoundError, version

    try:
        return version("nncc")
    except PackageNotFoundError:  # run from a source tree that is not installed
        return "unknown"


class VersionAction(argparse.Action):
    """`--version`, with the version read only when asked."""

    def __init__(self, option_strings, dest, **kwargs):
        super().__init__(option_strings, dest, nargs=0, help="print nncc's version and exit")

    def __call__(self, parser, namespace, values, option_string=None):
        parser.exit(0, f"{parser.prog} {nncc_version()}\n")


def output_file(text: str):
    """`-o FILE`; `-o -` is standard output (None), as for most Unix tools."""
    from pathlib import Path

    return None if text == "-" else Path(text)


def tolerance(text: str) -> float:
    """`--tolerance`: a finite number >= 0."""
    try:
        value = float(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"{text!r} is not a number") from None
    if not math.isfinite(value) or value < 0:
        raise argparse.ArgumentTypeError(f"{text} is not a finite number >= 0")
    return value


def available_cpus() -> int:
    """The CPUs this process may run on (its affinity), at least 1."""
    try:
        return max(1, len(os.sched_getaffinity(0)))
    except AttributeError:
        return os.cpu_count() or 1


def add_common_options(parser: argparse.ArgumentParser) -> None:
    """Options every nncc tool has: --version and --quiet."""
    parser.add_argument("--version", action=VersionAction)
    parser.add_argument("-q", "--quiet", action="store_true", help="no progress bar on stderr")


