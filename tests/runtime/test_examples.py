"""The hand-written programs in examples/programs: outputs against numpy, cycles against hand sums.

Constants of the `vector` target used below: 1 GHz; DMA latency 64 + DRAM latency 100 ns = 164
cycles; DMA channel 64 B/cycle; DRAM 42.6 B/cycle, one transfer at a time in start order; AM 192
B/cycle, SM 8 B/cycle; vector unit 16 lanes x 3 FMAC, pipeline depth 8.
A DMA touching DRAM ends at max(start + 164 + transfer, dram_slot + ceil(bytes / 42.6)) with
dram_slot = max(start + 164, DRAM free) and transfer = max(bytes / 64, on-chip bytes / its bandwidth).
"""

from pathlib import Path

import numpy as np

from nncc.runtime.assembler import assemble, disassemble
from nncc.runtime.interpreter import run
from nncc.runtime.program import from_bytes, to_bytes
from nncc.runtime.program_file import load

EXAMPLES = Path(__file__).parents[2] / "examples" / "programs"


def test_gemm_two_cores_multicast_double_buffered():
    program = load(EXAMPLES / "gemm_2core.s")
    rng = np.random.default_rng(0)
    a = rng.standard_normal((64, 32), dtype=np.float32)
    b = rng.standard_normal((32, 32), dtype=np.float32)
    result = run(program, {"A": a, "B": b})
    np.testing.assert_allclose(result.outputs["C"], a @ b, rtol=1e-5, atol=1e-5)
    # B: one 4096-byte DRAM read, written into both AMs
    assert result.read_bytes["DRAM"] == 4096 + 4 * 2048
    assert result.write_bytes["AM"] == 2 * 4096 + 4 * 2048
    # Each matmul: m*k*ceil(n/16)/3 = 16*32*2/3 -> 342 issue cycles; SM reads 2048 B / 8 = 256;
    # AM 4096 + 2048 B / 192 = 32  =>  342 + 8 (pipeline) = 350 cycles.
    # A-tile DMA (2048 B into SM): transfer = max(2048/64, 2048/8) = 256; DRAM busy ceil(2048/42.6) = 49.
    # B DMA (4096 B): transfer 64, DRAM busy ceil(4096/42.6) = 97.
    #   ch0 B        start 0    slot 164           DRAM free 261   end max(228, 261)       = 261
    #   ch1 A1t0     start 0    slot max(164,261)  DRAM free 310   end max(0+164+256, 310) = 420
    #   ch0 A0t0     start 261  slot 425           DRAM free 474   end 261+164+256         = 681
    #   ch1 A1t1     start 420  slot 584           DRAM free 633   end 420+420             = 840
    #   core1 mm t0  start 420 (B 261, A 420)                      end 420+350             = 770
    #   ch0 A0t1     start 681  slot 845           DRAM free 894   end 681+420             = 1101
    #   core0 mm t0  start 681                                     end 1031
    #   ch3 C1t0     start 770  slot 934 (2048 B, transfer 32)  DRAM free 983 end max(966, 983) = 983
    #   core1 mm t1  start 840                                     end 1190
    #   ch2 C0t0     start 1031 slot 1195          DRAM free 1244  end 1244
    #   core0 mm t1  start 1101                                    end 1451
    #   ch3 C1t1     start 1190 slot 1354          DRAM free 1403  end 1403
    #   ch2 C0t1     start 1451 slot 1615          DRAM free 1664  end 1664
    assert result.cycles == 1664
    assert result.busy["core0.main"] == result.busy["core1.main"] == 2 * 350
    assert result.macs == 64 * 32 * 32
    assert result.mac_utilization == 64 * 32 * 32 / (1664 * 4 * 48)


def test_maxpool_with_minus_inf_padding():
    program = load(EXAMPLES / "maxpool.s")
    x = np.random.default_rng(1).standard_normal((8, 8, 16), dtype=np.float32)
    result = run(program, {"x": x})
    padded = np.pad(x, ((1, 1), (1, 1), (0, 0)), constant_values=-np.inf)
    want = np.stack(
        [[padded[2 * i : 2 * i + 3, 2 * j : 2 * j + 3].max(axis=(0, 1)) for j in range(4)] for i in range(4)]
    )
    np.testing.assert_array_equal(result.outputs["y"], want)
    # load: 4096 B read, 6400 B written (10x10x16): transfer max(6400/64, 6400/192) = 100;
    #   slot 164, DRAM busy ceil(4096/42.6) = 97 -> 261; end max(164+100, 261) = 264
    # vpool: issue ceil(4*4*ceil(16/16)*9 / 3) = 48; AM (2304 + 256) * 4 B / 192 = 53.3 -> 54;
    #   54 + 8 = 62 -> end 326
    # store 1024 B: slot 326+164 = 490, DRAM busy ceil(1024/42.6) = 25 -> 515; end max(490+16, 515) = 515
    assert result.cycles == 515
    assert result.busy == {"dma0": 264 + (515 - 326), "core0.main": 62}


def test_batch_norm_add_relu():
    program = load(EXAMPLES / "bn_add_relu.s")
    rng = np.random.default_rng(2)
    x, r = rng.standard_normal((2, 16, 64), dtype=np.float32)
    scale, shift = rng.standard_normal((2, 64), dtype=np.float32)
    result = run(program, {"x": x, "r": r, "scale": scale, "shift": shift})
    np.testing.assert_allclose(result.outputs["y"], np.maximum(x * scale + shift + r, 0), rtol=1e-6, atol=1e-6)
    # ch0 x (4096 B):          slot 164, DRAM free 261, end 261
    # ch1 scale|shift (512 B): slot max(164, 261) = 261, DRAM free 261+13 = 274, end 274
    # ch1 r (4096 B):          start 274, slot 438, DRAM free 535, end 535
    # vfma  start 274: issue ceil(16*4/3) = 22; AM (4096+256+256+4096)/192 = 45.3 -> 46; +8 -> end 328
    # vadd  start 535 (waits r): AM 3*4096/192 = 64; +8 -> end 607
    # vact  start 607: AM 2*4096/192 = 42.7 -> 43; +8 -> end 658
    # store start 658: slot 822, DRAM free 822+97 = 919, end 919
    assert result.cycles == 919
    assert result.layers[0].onnx_nodes == ["BatchNormalization_0", "Add_1", "Relu_2"]
    assert result.layers[0].cycles == 919


def test_examples_round_trip_text_binary_text():
    for path in sorted(EXAMPLES.glob("*.s")):
        text = disassemble(assemble(path.read_text(), str(path)))
        assert disassemble(from_bytes(to_bytes(assemble(text)))) == text


def test_matmul_bn_relu_fused_on_the_post_unit():
    """fusion target: 32x32 matrix unit (depth 64), 32-lane post unit (depth 4), buffers 256 B/cycle,
    DMA 128 B/cycle + 64 cycles, DRAM 102.4 B/cycle + 100 cycles."""
    program = load(EXAMPLES / "matmul_bn_relu_fused.s")
    rng = np.random.default_rng(4)
    x = rng.standard_normal((64, 32), dtype=np.float32)
    w = rng.standard_normal((32, 32), dtype=np.float32)
    scale, shift = rng.standard_normal((2, 32), dtype=np.float32)
    result = run(program, {"X": x, "W": w, "scale": scale, "shift": shift}, trace=True)
    np.testing.assert_allclose(result.outputs["Y"], np.maximum((x @ w) * scale + shift, 0), rtol=1e-5, atol=1e-5)
    # matmul: 32 * ceil(32/32) * ceil(32/32) = 32; buffers 4096 B / 256 = 16  -> 32 + 64 = 96
    # post vfma / vact: 32 rows x ceil(32/32) lanes = 32; OBUF 8192 B / 256 = 32 -> 32 + 4 = 36
    #   ch0 W (4096 B)       slot 164, DRAM free 164 + 40 = 204            end max(164+32, 204) = 204
    #   ch1 X (8192 B)       slot 204, DRAM free 204 + 80 = 284            end max(164+64, 284) = 284
    #   ch0 scale|shift      start 204, slot 368, DRAM free 371            end 371
    #   matmul 0             start 284 (W 204, X 284)                      end 380
    #   matmul 1             start 380                                     end 476
    #   post vfma 0, vact 0  start 380 (tile 0 at 380, scale 371)         end 416, 452  <- overlaps matmul 1
    #   ch0 store Y0         start 452, slot 616, DRAM free 656            end max(648, 656) = 656
    #   post vfma 1, vact 1  start 476                                     end 512, 548
    #   ch0 store Y1         start 656 (channel busy), slot 820, DRAM free 860  end 860
    assert result.cycles == 860
    assert result.busy["core0.main"] == 2 * 96 and result.busy["core0.post"] == 4 * 36
    spans = {(e.engine, e.mnemonic, e.start) for e in result.trace}
    assert ("core0.main", "matmul", 380) in spans and ("core0.post", "vfma", 380) in spans
