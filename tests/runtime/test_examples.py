"""The hand-written programs in examples/programs: outputs against numpy, cycles against hand sums.

Constants of the `vector` target used below: 1 GHz; DMA latency 64 + DRAM latency 100 ns = 164
cycles; DMA channel 64 B/cycle, a multicast writing each destination in turn; AM 128 B/cycle, SM
8 B/cycle; vector unit 16 lanes x 3 FMAC, pipeline depth 8 (elementwise instructions).
DRAM bus: whole 64-B bursts per contiguous run at 0.8 x 42.6 = 34.08 B/cycle (at least a cycle per
run), one transfer at a time in start order. A DMA touching DRAM ends at max(start + 164 + transfer,
dram_slot + bus) with dram_slot = max(start + 164, DRAM free) and transfer = max(bytes written by
the channel / 64, on-chip bytes / its bandwidth).
A matmul: micro-kernel calls of <= 6 rows x v vectors (registers: 6 v + 2 v <= 64), each
k x max(ceil(6 v / 3), FMA latency 6, ceil(v / 4)) + 26 fill/drain + 7 (the call) + the c loads
and stores beyond the 9 cycles (36 vectors at 4 per cycle) the fill/drain holds. Every DMA costs the
core that launches it (a load's destination cores, a store's source core) 62 cycles
(dma.launch_cycles), added to that core's next instruction.
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
    # Each matmul (16 x 32 x 32, a already in SM: not staged): n = 2 vectors; rows 6 + 6 + 4.
    #   6-row call, v = 2: 32 x max(ceil(12/3), 6, 1) = 192 + 26 + 7 = 225 (twice; its c stores
    #   inside the fill/drain); 4-row call, v = 2: 32 x max(ceil(8/3), 6, 1) = 192 + 33 = 225
    #   => 675 cycles.
    # Every DMA costs the core(s) launching it 62 cycles (dma.launch_cycles), paid by their next
    #   instruction: a load its destination cores, a store its source core (DMAs are taken in
    #   (start, index) order, so a DMA starting with a matmul at the same cycle charges it first
    #   only if it comes before it in the program).
    # A-tile DMA (one 2048-byte run into SM): transfer = max(2048/64, 2048/8) = 256;
    #   bus 32 bursts x 64 / 34.08 -> 61.
    # B DMA (4096 B multicast to two AMs, written one after the other): transfer 8192/64 = 128;
    #   bus 64 bursts -> ceil(4096/34.08) = 121. C stores (2048 B from AM): transfer 32, bus 61.
    #   ch0 B        start 0    slot 164           DRAM free 285   end max(0+164+128, 285) = 292   core 0, 1 owe 62
    #   ch1 A1t0     start 0    slot max(164,285)  DRAM free 346   end max(0+164+256, 346) = 420   core 1 owes 124
    #   ch0 A0t0     start 292  slot 456           DRAM free 517   end 292+420             = 712   core 0 owes 124
    #   ch1 A1t1     start 420  slot 584           DRAM free 645   end 420+420             = 840   core 1 owes 186
    #   core1 mm t0  start 420 (B 292, A 420)                      end 420+675+186         = 1281
    #   ch0 A0t1     start 712  slot 876           DRAM free 937   end 712+420             = 1132  core 0 owes 186
    #   core0 mm t0  start 712                                     end 712+675+186         = 1573
    #   core1 mm t1  start 1281 (A 840)                            end 1956
    #   ch3 C1t0     start 1281 slot 1445          DRAM free 1506  end max(1477, 1506)     = 1506  (core 1: no later instruction)
    #   core0 mm t1  start 1573 (A 1132)                           end 2248
    #   ch2 C0t0     start 1573 slot 1737          DRAM free 1798  end max(1769, 1798)     = 1798
    #   ch3 C1t1     start 1956 slot 2120          DRAM free 2181  end 2181
    #   ch2 C0t1     start 2248 slot 2412          DRAM free 2473  end 2473
    assert result.cycles == 2473
    assert result.busy["core0.main"] == result.busy["core1.main"] == 2 * 675 + 3 * 62
    assert result.macs == 64 * 32 * 32
    assert result.mac_utilization == 64 * 32 * 32 / (2473 * 4 * 48)
    # b is read by each of a matmul's three row blocks: 2 x 4096 B more than one pass, per matmul
    assert result.read_bytes["AM"] == 4 * 3 * 4096 + 4 * 2048  # + the C stores'
    assert result.read_bytes["SM"] == 4 * 2048  # every call reads its rows of A once


def test_maxpool_with_minus_inf_padding():
    program = load(EXAMPLES / "maxpool.s")
    x = np.random.default_rng(1).standard_normal((8, 8, 16), dtype=np.float32)
    result = run(program, {"x": x})
    padded = np.pad(x, ((1, 1), (1, 1), (0, 0)), constant_values=-np.inf)
    want = np.stack(
        [[padded[2 * i : 2 * i + 3, 2 * j : 2 * j + 3].max(axis=(0, 1)) for j in range(4)] for i in range(4)]
    )
    np.testing.assert_array_equal(result.outputs["y"], want)
    # load: 4096 B read (8 rows of 8 x 16 floats, contiguous in DRAM: one run), 6400 B written
    #   (10x10x16): transfer max(6400/64, 6400/128) = 100; slot 164, bus 64 bursts -> ceil(4096/34.08)
    #   = 121 -> 285; end max(164+100, 285) = 285
    # vpool: issue ceil(4*4*ceil(16/16)*9 / 3) = 48; AM (2304 + 256) * 4 B / 128 = 80; 80 + 8 = 88,
    #   + 62 for core 0's launch + wait of the load (dma.launch_cycles) -> end 435
    # store 1024 B: slot 435+164 = 599, bus 16 bursts -> ceil(1024/34.08) = 31 -> 630;
    #   end max(599+16, 630) = 630 (its launch: after the core's last instruction, not charged)
    assert result.cycles == 630
    assert result.busy == {"dma0": 285 + (630 - 435), "core0.main": 88 + 62}


def test_batch_norm_add_relu():
    program = load(EXAMPLES / "bn_add_relu.s")
    rng = np.random.default_rng(2)
    x, r = rng.standard_normal((2, 16, 64), dtype=np.float32)
    scale, shift = rng.standard_normal((2, 64), dtype=np.float32)
    result = run(program, {"x": x, "r": r, "scale": scale, "shift": shift})
    np.testing.assert_allclose(result.outputs["y"], np.maximum(x * scale + shift + r, 0), rtol=1e-6, atol=1e-6)
    # ch0 x (4096 B):          slot 164, bus 121, DRAM free 285, end max(164+64, 285) = 285
    # ch1 scale|shift (512 B): slot max(164, 285) = 285, bus ceil(512/34.08) = 16, DRAM free 301, end 301
    # ch1 r (4096 B):          start 301, slot 465, DRAM free 586, end max(301+164+64, 586) = 586
    # vfma  start 301: issue ceil(16*4/3) = 22; AM (4096+256+256+4096)/128 = 68; +8 -> end 377
    # vadd  start 586 (waits r): AM 3*4096/128 = 96; +8 -> end 690
    # vact  start 690: AM 2*4096/128 = 64; +8 -> end 762
    # store start 762: slot 926, DRAM free 926+121 = 1047, end max(762+164+64, 1047) = 1047
    assert result.cycles == 1047
    assert result.layers[0].onnx_nodes == ["BatchNormalization_0", "Add_1", "Relu_2"]
    assert result.layers[0].cycles == 1047


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
