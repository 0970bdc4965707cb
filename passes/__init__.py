"""nncc's passes: one file per pass, registered here by kebab-case name.

Like xDSL's `get_all_passes`, each entry is a small function that imports its
pass lazily, so start-up stays fast.
"""

from collections.abc import Callable

from xdsl.passes import ModulePass


def get_canonicalize_nn() -> type[ModulePass]:
    from nncc.passes.canonicalize_nn import CanonicalizeNNPass

    return CanonicalizeNNPass


def get_fold_batch_norm() -> type[ModulePass]:
    from nncc.passes.fold_batch_norm import FoldBatchNormPass

    return FoldBatchNormPass


def get_cp_decompose() -> type[ModulePass]:
    from nncc.passes.cp_decompose import CpDecomposePass

    return CpDecomposePass


def get_fuse_epilogues() -> type[ModulePass]:
    from nncc.passes.fuse_epilogues import FuseEpiloguesPass

    return FuseEpiloguesPass


def get_partition_cores() -> type[ModulePass]:
    from nncc.passes.partition_cores import PartitionCoresPass

    return PartitionCoresPass


def get_fuse_groups() -> type[ModulePass]:
    from nncc.passes.fuse_groups import FuseGroupsPass

    return FuseGroupsPass


def get_tile_layers() -> type[ModulePass]:
    from nncc.passes.tile_layers import TileLayersPass

    return TileLayersPass


def get_dram_layout() -> type[ModulePass]:
    from nncc.passes.dram_layout import DramLayoutPass

    return DramLayoutPass


def get_double_buffer() -> type[ModulePass]:
    from nncc.passes.double_buffer import DoubleBufferPass

    return DoubleBufferPass


def get_lower_to_isa() -> type[ModulePass]:
    from nncc.passes.lower_to_isa import LowerToIsaPass

    return LowerToIsaPass


def get_autodiff() -> type[ModulePass]:
    from nncc.passes.autodiff import AutodiffPass

    return AutodiffPass


def get_lower_training_ops() -> type[ModulePass]:
    from nncc.passes.lower_training_ops import LowerTrainingOpsPass

    return LowerTrainingOpsPass


def get_fuse_batch_norm_training() -> type[ModulePass]:
    from nncc.passes.fuse_batch_norm_training import FuseBatchNormTrainingPass

    return FuseBatchNormTrainingPass


def get_all_passes() -> dict[str, Callable[[], type[ModulePass]]]:
    """nncc's own passes, by name."""
    return {
        "canonicalize-nn": get_canonicalize_nn,
        "autodiff": get_autodiff,
        "fuse-batch-norm-training": get_fuse_batch_norm_training,
        "lower-training-ops": get_lower_training_ops,
        "fold-batch-norm": get_fold_batch_norm,
        "cp-decompose": get_cp_decompose,
        "fuse-epilogues": get_fuse_epilogues,
        "partition-cores": get_partition_cores,
        "fuse-groups": get_fuse_groups,
        "tile-layers": get_tile_layers,
        "dram-layout": get_dram_layout,
        "double-buffer": get_double_buffer,
        "lower-to-isa": get_lower_to_isa,
    }
