"""The FT-M7032 library's single-core GEMM schedule replayed as an nncc program (compiler/library_gemm.py)."""

import numpy as np
import pytest

from nncc.compiler.library_gemm import Blocking, library_gemm_program
from nncc.runtime.interpreter import random_inputs, run
from nncc.runtime.target import load_target


def test_replay_computes_c_plus_ab_and_pays_one_panel_per_a_tile():
    # 12 x 48 x 256 in blocks K_A = 128, N_A = 48, M_A = 12, M_S = 6: 2 k blocks x 2 A tiles = 4
    # matmuls of 6 x 48 x 128, each accumulating into C and with a in GSM, so staged into SM:
    # 128 x 6 + 26 fill/drain (C's loads and stores inside) + 7 (the call) + 62 (one DMA launch +
    # wait); and per k block 4 DMAs the core launches and waits for (A into GSM, B, C in, C out:
    # 62 each, Yu et al. Eq. 9), all but the last store before a matmul that pays them: 7 x 62
    program = library_gemm_program(load_target("vector", ["cores=1"]), 12, 48, 256, Blocking(128, 48, 12, 6))
    inputs = random_inputs(program)
    result = run(program, inputs)
    np.testing.assert_allclose(result.outputs["c"], inputs["c_in"] + inputs["a"] @ inputs["b"], rtol=1e-4, atol=1e-4)
    assert result.busy["core0.main"] == 4 * (768 + 26 + 7 + 62) + 7 * 62
    # without the DMA launches (dma.launch_cycles = 0) the matmuls alone
    plain = run(library_gemm_program(load_target("vector", ["cores=1", "dma.launch_cycles=0"]), 12, 48, 256,
                                     Blocking(128, 48, 12, 6)), inputs)
    assert plain.busy["core0.main"] == 4 * (768 + 26 + 7 + 62)
    # the first loads (A into GSM, B, C) come before the first matmul, the last store after it
    assert result.cycles > result.busy["core0.main"]


def test_replay_over_several_buffers_agrees_with_numpy():
    # 3 k blocks, 3 column blocks, 2 C blocks each: B double- and C triple-buffered, C reloaded
    # from the output between k blocks
    program = library_gemm_program(load_target("vector", ["cores=1"]), 24, 96, 192, Blocking(64, 32, 12, 6))
    inputs = random_inputs(program)
    result = run(program, inputs)
    np.testing.assert_allclose(result.outputs["c"], inputs["c_in"] + inputs["a"] @ inputs["b"], rtol=1e-4, atol=1e-4)


def test_replay_on_two_cores_splits_the_columns_and_shares_a():
    # each core takes 48 of the 96 columns: 3 C blocks of 12 rows, 2 k blocks, so 12 matmuls of
    # 6 x 48 x 128 as above on each core; A's block in GSM loaded once per k block for both; core
    # c's DMAs on channels 3c .. 3c + 2. Each core launches and waits for its B (2), C loads (6)
    # and stores (6, the last one after its last matmul: not charged); core 0 also A's 2 GSM loads
    target = load_target("vector", ["cores=2", "dma.channels=6"])
    program = library_gemm_program(target, 36, 96, 256, Blocking(128, 48, 12, 6), cores=2)
    inputs = random_inputs(program)
    result = run(program, inputs)
    np.testing.assert_allclose(result.outputs["c"], inputs["c_in"] + inputs["a"] @ inputs["b"], rtol=1e-4, atol=1e-4)
    assert result.busy["core0.main"] == 12 * (768 + 26 + 7 + 62) + 15 * 62
    assert result.busy["core1.main"] == 12 * (768 + 26 + 7 + 62) + 13 * 62
    gsm_loads = [ins for ins in program.instructions if type(ins).DEF.mnemonic == "dma" and ins.dst[0] == "GSM"]
    assert len(gsm_loads) == 2


def test_replay_refuses_blocks_that_do_not_divide_the_shape():
    with pytest.raises(ValueError, match="must divide"):
        library_gemm_program(load_target("vector"), 10, 48, 128, Blocking(128, 48, 12, 6))
    with pytest.raises(ValueError, match="fewer than 3 C blocks"):
        library_gemm_program(load_target("vector", ["cores=2"]), 12, 96, 128, Blocking(128, 48, 12, 6), cores=2)
