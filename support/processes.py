"""Whether nncc may fork helper processes (the tile search's workers, the ONNX checker)."""

from __future__ import annotations

import multiprocessing


def may_fork() -> bool:
    """The platform forks, and this process is no daemonic worker (which may have no children)."""
    return "fork" in multiprocessing.get_all_start_methods() and not multiprocessing.current_process().daemon
