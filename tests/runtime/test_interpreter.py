"""The dispatcher and the timing/energy model: hand-computed cycles, synchronisation, faults."""

import numpy as np
import pytest

from nncc.runtime import isa
from nncc.runtime.faults import MachineFault
from nncc.runtime.interpreter import run


def load(src, dst, n, **extra):
    return isa.make("dma", src=("DRAM", src), src_stride=(0, 0, 1), dst=dst, dst_stride=(0, 0, 1), shape=(1, 1, n), **extra)


def store(src, dst, n, **extra):
    return isa.make("dma", src=src, src_stride=(0, 0, 1), dst=("DRAM", dst), dst_stride=(0, 0, 1), shape=(1, 1, n), **extra)


def copy(src, dst, n, **extra):
    return isa.make("vact", func="copy", shape=(1, 1, n), x=src, x_stride=(0, 0, 1), z=dst, z_stride=(0, 0, 1), **extra)


# ---- timing


def test_matrix_unit_matmul_cycles(build):
    # fusion: 32x32 matrix unit, depth 64. m=10, n=40, k=33: 10 * ceil(33/32) * ceil(40/32) = 40 cycles;
    # memories (256 B/cycle): IBUF 10*33*4 = 1320 B -> 6, WBUF 33*40*4 = 5280 B -> 21, OBUF 1600 B -> 7.
    # 40 + 64 = 104.
    mm = isa.make("matmul", mnk=(10, 40, 33), a=("IBUF", 0), a_stride=(0, 33, 1), b=("WBUF", 0),
                  b_stride=(0, 40, 1), c=("OBUF", 0), c_stride=(0, 40, 1))  # fmt: skip
    result = run(build("fusion", [mm]))
    assert result.cycles == 104
    assert result.mac_utilization == 10 * 40 * 33 / (104 * 1024)


def test_vector_lanes_wasted_by_narrow_n(build):
    def matmul(n):
        return isa.make("matmul", mnk=(4, n, 8), a=("SM", 0), a_stride=(0, 8, 1), b=("AM", 0),
                        b_stride=(0, n, 1), c=("AM", 4096), c_stride=(0, n, 1))  # fmt: skip

    # one micro-kernel call of 4 rows (a in SM: not staged); a k step waits for the FMA latency (6)
    # n=16, 1 vector: 8 x max(ceil(4/3), 6, ceil(1/4)) = 48 + fill/drain 26 + 7 (the call) = 81
    # (its 4 c stores inside the fill/drain); n=17, 2 vectors (the second uses 1 lane of 16) costs
    # as much as n=32: 8 x max(ceil(8/3), 6, 1) + 26 + 7 = 81
    assert run(build("vector", [matmul(16)])).cycles == 81
    assert run(build("vector", [matmul(17)])).cycles == run(build("vector", [matmul(32)])).cycles == 81
    # 6 rows x 128 columns (8 vectors: 48 accumulators): 8 x 16 + 26 + 7 + ceil(48 / 4) - 9 = 164,
    # the 48 c stores (4 per cycle) overflowing the 9 cycles the fill/drain holds
    wide = isa.make("matmul", mnk=(6, 128, 8), a=("SM", 0), a_stride=(0, 8, 1), b=("AM", 0),
                    b_stride=(0, 128, 1), c=("AM", 8192), c_stride=(0, 128, 1))  # fmt: skip
    assert run(build("vector", [wide])).cycles == 164


def test_cores_pay_for_launching_and_waiting_for_dmas(build):
    def matmul(core, **sync):  # 81 cycles (test_vector_lanes_wasted_by_narrow_n)
        return isa.make("matmul", core=core, mnk=(4, 16, 8), a=("SM", 0), a_stride=(0, 8, 1), b=("AM", 0),
                        b_stride=(0, 16, 1), c=("AM", 4096), c_stride=(0, 16, 1), **sync)  # fmt: skip

    code = [
        load(0, ("AM", 0), 1024, cores=(0, 1), signal=(0, 1)),  # multicast: cores 0 and 1 each launch + wait
        matmul(0, wait=(0,)),  # 81 + 62
        matmul(1, wait=(1,), signal=(2,)),  # 81 + 62
        store(("AM", 4096), 8192, 64, src_core=1, wait=(2,), signal=(3,)),  # its source core, 1, launches it
        matmul(1, wait=(3,)),  # 81 + 62
        store(("AM", 4096), 8192, 64, src_core=0),  # after core 0's last instruction: not charged
    ]
    result = run(build("vector", code))
    assert (result.busy["core0.main"], result.busy["core1.main"]) == (81 + 62, 2 * (81 + 62))
    free = run(build("vector", code, overrides=["dma.launch_cycles=0"]))
    assert (free.busy["core0.main"], free.busy["core1.main"]) == (81, 2 * 81)


def test_matmul_epilogue_overlaps_the_macs(build):
    def matmul(k, **epilogue):
        return isa.make("matmul", batch=4, mnk=(8, 32, k), a=("AM", 0), a_stride=(0, k, 1), b=("AM", 8192),
                        b_stride=(0, 32, 1), c=("AM", 65536), c_stride=(256, 32, 1), **epilogue)  # fmt: skip

    def cycles(k, **epilogue):
        return run(build("vector", [matmul(k, **epilogue)])).cycles

    bias_relu = {"bias": ("AM", 131072), "bias_stride": (0, 0, 1), "act": "relu"}
    # per batch element, m = 8 rows in two calls (6 and 2 rows) of 2 vectors; a is in AM, so it is
    # staged into SM: both row blocks (8 x k words) in one panel, one DMA launch + wait (62). k=3:
    #   6 rows: 3 x max(ceil(12/3), 6, 1) + 26 + 7 = 51 (the c stores inside the fill/drain);
    #   2 rows: 18 + 26 + 7 = 51; (51 + 51 + 62) x 4 = 656. The epilogue (bias 1 + relu 1 passes)
    #   4*8*2*2 / 3 -> 43 rides on the ALU slot beside the calls: hidden.
    assert cycles(3) == cycles(3, **bias_relu) == 656
    # k=1: (6 + 33) + (6 + 33) + 62 = 140 per element, 560; bias + hardswish = 1 + 3 passes:
    # 4*8*2*4 / 3 -> 86 cycles, still hidden behind the calls' fill/drain.
    assert cycles(1) == 560
    assert cycles(1, bias=("AM", 131072), bias_stride=(0, 0, 1), act="hardswish") == 560


def test_matmul_epilogue_is_refused_on_a_matrix_unit(build):
    mm = isa.make("matmul", mnk=(4, 4, 4), a=("IBUF", 0), a_stride=(0, 4, 1), b=("WBUF", 0), b_stride=(0, 4, 1),
                  c=("OBUF", 0), c_stride=(0, 4, 1), act="relu")  # fmt: skip
    with pytest.raises(MachineFault, match="matrix unit: it has no bias/act epilogue"):
        run(build("fusion", [mm]))


def test_concurrent_transfers_share_dram_bandwidth(build):
    # one 4096-byte load (one run, 64 bursts): slot at 164, DRAM busy ceil(4096 / (0.8 x 42.6)) = 121
    one = build("vector", [load(0, ("AM", 0), 1024)])
    assert run(one).cycles == 285
    # two loads on two channels, both started at 0: the second waits for the DRAM bus: 285 + 121 = 406
    two = build("vector", [load(0, ("AM", 0), 1024), load(4096, ("AM", 4096), 1024, ch=1)])
    result = run(two)
    assert result.cycles == 406 and result.busy == {"dma0": 285, "dma1": 406}
    # twice the bandwidth: DRAM busy ceil(4096/68.16) = 61. The first is now channel-bound:
    # max(164 + 4096/64, 164 + 61) = 228; the second's DRAM slot is 225 -> max(228, 225 + 61) = 286
    faster = build("vector", two.instructions, overrides=["dram.bandwidth_gbps=85.2"])
    assert run(faster).busy == {"dma0": 228, "dma1": 286}


def test_scattered_elements_cost_whole_bursts(build):
    # 64 floats 64 B apart in DRAM: 64 runs of 4 B, each a whole burst: bus 64 x 64 / 34.08 -> 121,
    # as for 4096 contiguous bytes, for 256 bytes; at least one cycle per run (64) is less.
    column = isa.make("dma", src=("DRAM", 0), src_stride=(0, 16, 16), dst=("AM", 0), dst_stride=(0, 1, 1),
                      shape=(1, 64, 1))  # fmt: skip
    assert run(build("vector", [column])).cycles == 164 + 121
    # with 1-byte bursts (4 per element), the far end's cycle per run dominates: 64 runs -> 64 cycles
    # (bus 256 / 34.08 -> 8)
    tiny = build("vector", [column], overrides=["dram.burst_bytes=4", "dram.row_buffer_bytes=8192"])
    assert run(tiny).cycles == 164 + 64


def test_onchip_transfer_has_no_dram_latency(build):
    # GSM -> AM of 4 cores, 4096 B: the channel writes each core's copy in turn: latency 64 +
    # max(4 x 4096/64 channel, 4096/64 GSM, 4096/128 AM) = 64 + 256 = 320
    code = [isa.make("dma", src=("GSM", 0), src_stride=(0, 0, 1), dst=("AM", 0), cores=(0, 1, 2, 3),
                     dst_stride=(0, 0, 1), shape=(1, 1, 1024))]  # fmt: skip
    result = run(build("vector", code))
    assert result.cycles == 320
    # a target whose DMA broadcasts writes all four at once: 64 + 64
    assert run(build("vector", code, overrides=["dma.broadcast=true"])).cycles == 128
    assert result.read_bytes == {"GSM": 4096} and result.write_bytes == {"AM": 4 * 4096}


def test_barrier_orders_all_engines(build):
    # the load ends at 285; the barrier costs 64 cycles after it; then core 1's vfill (1024
    # elements: 64 passes / 3 -> 22, AM 4096 B / 128 -> 32; + 8 = 40) starts at 349 although core 1
    # was idle.
    fill = isa.make("vfill", core=1, shape=(1, 1, 1024), z=("AM", 0), z_stride=(0, 0, 1))
    result = run(build("vector", [load(0, ("AM", 0), 1024), isa.make("barrier"), fill]), trace=True)
    assert result.cycles == 285 + 64 + 40
    assert [(e.engine, e.start, e.end) for e in result.trace] == [("dma0", 0, 285), ("core1.main", 349, 389)]


def test_pre_and_post_units_run_concurrently_with_the_matrix_unit(build):
    # fusion: the matmul (104 cycles as above) and a 1024-element ReLU on the post unit
    # (32 lanes x 1: 32 passes; OBUF 8192 B / 256 = 32; + 4 = 36) both start at 0.
    mm = isa.make("matmul", mnk=(10, 40, 33), a=("IBUF", 0), a_stride=(0, 33, 1), b=("WBUF", 0),
                  b_stride=(0, 40, 1), c=("OBUF", 0), c_stride=(0, 40, 1))  # fmt: skip
    relu = isa.make("vact", unit="post", func="relu", shape=(1, 1, 1024), x=("OBUF", 8192), x_stride=(0, 0, 1),
                    z=("OBUF", 8192), z_stride=(0, 0, 1))  # fmt: skip
    result = run(build("fusion", [mm, relu]))
    assert result.cycles == 104
    assert result.busy == {"core0.main": 104, "core0.post": 36}


# ---- synchronisation


def test_missing_synchronisation_reads_stale_data(build):
    """Writes land when an instruction completes: reading before the DMA is done sees old data."""
    x = np.arange(1, 17, dtype=np.float32)
    symbols = [("x", "input", 0, (16,)), ("y", "output", 64, (16,))]
    racy = [load(0, ("AM", 0), 16), copy(("AM", 0), ("AM", 64), 16, signal=(1,)), store(("AM", 64), 64, 16, wait=(1,))]
    np.testing.assert_array_equal(run(build("vector", racy, symbols), {"x": x}).outputs["y"], np.zeros(16))
    synced = [load(0, ("AM", 0), 16, signal=(0,)), copy(("AM", 0), ("AM", 64), 16, wait=(0,), signal=(1,)),
              store(("AM", 64), 64, 16, wait=(1,))]  # fmt: skip
    np.testing.assert_array_equal(run(build("vector", synced, symbols), {"x": x}).outputs["y"], x)


def test_semaphores_count_tokens(build):
    # two loads each give a token to semaphore 0; the copy takes one, the store a second one
    code = [load(0, ("AM", 0), 16, signal=(0,)), load(0, ("AM", 64), 16, signal=(0,), ch=1),
            copy(("AM", 0), ("AM", 128), 16, wait=(0,)), copy(("AM", 64), ("AM", 192), 16, wait=(0,))]  # fmt: skip
    result = run(build("vector", code), trace=True)
    starts = {e.index: e.start for e in result.trace}
    ends = {e.index: e.end for e in result.trace}
    assert starts[2] == ends[0] and starts[3] == max(ends[1], ends[2])


def test_deadlock_is_a_fault(build):
    code = [load(0, ("AM", 0), 16, signal=(0,)), copy(("AM", 0), ("AM", 64), 16, wait=(0, 4))]
    with pytest.raises(MachineFault) as info:
        run(build("vector", code))
    assert (info.value.index, info.value.opcode) == (1, "vact")
    assert "deadlock: waits on semaphore 4" in info.value.reason


# ---- faults


@pytest.mark.parametrize(
    "target, instruction, reason",
    [
        ("vector", copy(("AM", 2), ("AM", 64), 16), "misaligned address AM[0x2]"),
        ("vector", copy(("AM", 786432 - 32), ("AM", 0), 16), "AM overflow"),
        ("vector", copy(("SM", 0), ("SM", 65536 - 60), 16), "SM overflow"),
        ("vector", load(1 << 16, ("AM", 0), 16), "address out of range: tile DRAM[0x10000]"),
        ("vector", copy(("DRAM", 0), ("AM", 0), 16), "is in DRAM; load it on chip first"),
        ("vector", copy(("AM", 0), ("AM", 64), 16, core=4), "core 4 does not exist"),
        ("vector", load(0, ("AM", 0), 16, ch=7), "DMA channel 7 does not exist"),
        ("vector", copy(("AM", 0), ("AM", 64), 16, unit="pre"), "has no pre unit"),
        ("fusion", copy(("OBUF", 0), ("OBUF", 64), 16), "matrix unit: it runs matmul only"),
        ("vector", load(0, ("GSM", 0), 16, cores=(0, 1)), "multicast to GSM"),
        ("vector", load(0, ("AM", 0), 16, pad=(0, 0, 0, 0, 9, 9)), "padding"),
    ],
)
def test_bad_programs_fault_with_index_and_reason(build, target, instruction, reason):
    program = build(target, [isa.make("barrier"), instruction])
    with pytest.raises(MachineFault) as info:
        run(program)
    assert info.value.index == 1
    assert reason in info.value.reason
    assert str(info.value).startswith(f"fault at instruction 1 ({isa.definition_of(instruction).mnemonic}): ")


def test_program_larger_than_target_dram(build):
    with pytest.raises(MachineFault, match="program needs"):
        run(build("edge", [], dram_bytes=1 << 31))


# ---- counters


def test_layers_attribute_cycles_macs_and_dram_bytes(build):
    code = [
        isa.make("layer", name="load", nodes="A,B"),
        load(0, ("AM", 0), 1024, signal=(0,)),
        isa.make("layer", name="mm", nodes="Gemm_0", phase="backward"),
        isa.make("matmul", mnk=(4, 16, 8), a=("SM", 0), a_stride=(0, 8, 1), b=("AM", 0), b_stride=(0, 16, 1),
                 c=("AM", 4096), c_stride=(0, 16, 1), wait=(0,)),
    ]  # fmt: skip
    result = run(build("vector", code))
    first, second = result.layers
    assert (first.name, first.onnx_nodes, first.phase, first.cycles) == ("load", ["A", "B"], "forward", 285)
    assert first.dram_read_bytes == 4096 and first.macs == 0
    # one 4-row call of 1 vector, a in SM: 8 x 6 + 26 + 7 = 81 (test_vector_lanes_wasted_by_narrow_n),
    # and core 0's launch + wait of the load before it (dma.launch_cycles, 62), paid by its next
    # instruction
    assert (second.phase, second.cycles, second.macs) == ("backward", 81 + 62, 4 * 16 * 8)
    assert result.cycles == 285 + 81 + 62


def test_energy_by_component(build):
    # edge: one 4096-byte contiguous load from DRAM 0 (8 KiB rows, 64-byte bursts): 64 read bursts,
    # one activation (bank 0 opens row 0), 63 row-buffer hits
    result = run(build("edge", [load(0, ("BUF", 0), 1024)]))
    energy = result.energy_pj
    assert (result.dram.read_bursts, result.dram_activations, result.dram.hits) == (64, 1, 63)
    assert energy["dram"] == 28080.0 + 64 * 11880.0
    assert result.dram_energy_pj == {"activation": 28080.0, "read": 64 * 11880.0, "write": 0.0, "transfer": 0.0,
                                     "total": energy["dram"]}
    assert energy["onchip"] == 4096 / 4 * 6.6  # 1024 words written
    assert energy["compute"] == 0.0
    assert energy["total"] == energy["dram"] + energy["onchip"]
    # a column of 16 elements 8 KiB apart: pages 0..15 are banks 0..7 with row 0, then banks 0..7
    # with row 1: every burst opens a row
    column = isa.make("dma", src=("DRAM", 0), src_stride=(0, 2048, 1), dst=("BUF", 0), dst_stride=(0, 1, 1),
                      shape=(1, 16, 1))  # fmt: skip
    assert run(build("edge", [column], dram_bytes=1 << 17)).dram_activations == 16


def test_compute_energy_counts_macs_and_operations(build):
    mm = isa.make("matmul", mnk=(4, 16, 8), a=("SM", 0), a_stride=(0, 8, 1), b=("AM", 0), b_stride=(0, 16, 1),
                  c=("AM", 4096), c_stride=(0, 16, 1))  # fmt: skip
    relu = isa.make("vact", func="relu", shape=(1, 1, 100), x=("AM", 0), x_stride=(0, 0, 1), z=("AM", 0), z_stride=(0, 0, 1))
    result = run(build("vector", [mm, relu]))
    assert result.compute_energy_pj == pytest.approx(512 * 4.6 + 100 * 0.9)


def test_training_mode_reads_back_updated_weights(build):
    code = [load(0, ("AM", 0), 4, signal=(0,)),
            isa.make("vact", func="affine", p0=1.0, p1=-0.5, shape=(1, 1, 4), x=("AM", 0), x_stride=(0, 0, 1),
                     z=("AM", 0), z_stride=(0, 0, 1), wait=(0,), signal=(1,)),
            store(("AM", 0), 0, 4, wait=(1,))]  # fmt: skip
    program = build("vector", code, [("w", "weight", 0, (4,))], mode="training")
    program.add_data(0, np.ones(4))
    np.testing.assert_array_equal(run(program, {}).outputs["w"], np.full(4, 0.5))


def test_inputs_are_checked_by_name(build):
    """A missing input and a name that is no input or weight of the program are refused (the
    interpreter used to run a misspelt input on zeros)."""
    from nncc.runtime.interpreter import Interpreter
    from nncc.support.errors import NnccError

    program = build("vector", [load(0, ("AM", 0), 4), store(("AM", 0), 64, 4)],
                    symbols=[("x", "input", 0, (4,)), ("y", "output", 64, (4,))])
    with pytest.raises(NnccError, match="missing input"):
        run(program, {})
    with pytest.raises(NnccError, match=r"^X: not an input of the program \(its inputs: x\)"):
        Interpreter(program).run({"x": np.zeros(4, np.float32), "X": np.ones(4, np.float32)})
    assert run(program, {"x": np.arange(4, dtype=np.float32)}).outputs["y"].tolist() == [0, 1, 2, 3]
