"""nncc's dialects and passes as an xDSL `Universe`.

Published under the `xdsl.universe` entry point (pyproject.toml), so `xdsl-opt`
and every other xDSL tool see nncc's dialects and passes, and nncc sees those of
any other package that publishes a universe.
"""

from importlib.util import find_spec

from xdsl.ir import Dialect
from xdsl.universe import Universe

from nncc.passes import get_all_passes


def get_nn() -> Dialect:
    from nncc.dialects.nn import NN

    return NN


def get_fused() -> Dialect:
    from nncc.dialects.fused import FUSED

    return FUSED


def get_tile() -> Dialect:
    from nncc.dialects.tile import TILE

    return TILE


def get_isa() -> Dialect:
    from nncc.dialects.isa import ISA

    return ISA


def get_all_dialects() -> dict:
    dialects = {"nn": get_nn, "fused": get_fused, "tile": get_tile}
    if find_spec("nncc.dialects.isa") is not None:
        dialects["isa"] = get_isa
    return dialects


NNCC_UNIVERSE = Universe(all_dialects=get_all_dialects(), all_passes=get_all_passes())
