"""The FT-M7032 GEMM library's own schedule, replayed as an nncc program.

Yu et al., "Optimizing General Matrix Multiplications on Modern Multi-core DSPs" (IPDPS 2024),
Fig. 4, NN mode: C = A B + C with A [M, K], B [K, N] row-major in DRAM, each core taking N / cores
columns of B and C, blocked as

    for ko in K by K_A:                      A[:, ko] -> GSM (one M x K_A block; K_G = K_A)
      for ni in N by N_A:                    B[ko, ni] (K_A x N_A) -> AM, double-buffered
        for mi in M by M_A:                  C[mi, ni] (M_A x N_A) -> AM, triple-buffered
          for ms in M_A by M_S:              the A tile (M_S x K_A) GSM -> SM, then the micro-kernel
            matmul  M_S x N_A x K_A, acc     (a in GSM: staged into SM, one DMA launch + wait)
          C[mi, ni] <- AM

with the block sizes of the paper's single-core runs (Section V-B1). The program is what
`nncc-bench --only kernel` times to compare the model with the paper's measured 92 / 94 / 96 %;
nncc's compiler does not use this schedule. The hand-written program (one `matmul` per A tile,
DMAs on three channels, semaphores for every buffer) runs on the interpreter like any other:

    dma ch=0 src=DRAM[a] dst=GSM[0x0] shape=1,M,K_A signal=0
    dma ch=0 src=DRAM[b] dst=AM[b0] shape=1,K_A,N_A signal=2
    dma ch=1 src=DRAM[c_in] dst=AM[c0] shape=1,M_A,N_A signal=6
    matmul mnk=M_S,N_A,K_A a=GSM[0x0] b=AM[b0] c=AM[c0] acc=1 wait=0,2,6
    ...
    dma ch=2 src=AM[c0] dst=DRAM[c] shape=1,M_A,N_A wait=9 signal=12
"""

from __future__ import annotations

from dataclasses import dataclass

from nncc.runtime import isa
from nncc.runtime.program import Program, Symbol
from nncc.runtime.target import Target

F32 = 4
SEMAPHORES_PER_CORE = 15  # A full/free, B full/free x 2, C full/done/free x 3
C_STORED = 62  # one core with fewer than 3 C blocks per k block: a reload waits for its store


@dataclass(frozen=True)
class Blocking:
    """The library's block sizes: K_A (= K_G) k per block, N_A columns of B and C in AM, M_A rows
    of C in AM, M_S rows of A per SM tile."""

    ka: int
    na: int
    ma: int
    ms: int


# Yu et al. 2024, Section V-B1 (NN mode, one core): K_A = 128 / 256 / 512 with N_A = 192 / 96 / 48,
# M_S = 24 / 12 / 6, M_A = 72 / 144 / 252; measured 158 / 163 / 165 of 172.8 GFLOPS peak.
PAPER_BLOCKINGS = {128: Blocking(128, 192, 72, 24), 256: Blocking(256, 96, 144, 12), 512: Blocking(512, 48, 252, 6)}
PAPER_GFLOPS = {128: 158.0, 256: 163.0, 512: 165.0}
PAPER_PEAK_GFLOPS = 172.8


def library_gemm_program(target: Target, m: int, n: int, k: int, blocking: Blocking, cores: int = 1) -> Program:
    """C = A B + C_in on `cores` cores of `target` in the library's loop order and buffers (module
    doc); each core takes n / cores columns of B and C ([Y] Section III-B), A's block in GSM is
    shared, and core c's DMAs run on channels 3c, 3c + 1, 3c + 2. Symbols: inputs a [m, k],
    b [k, n], c_in [m, n]; output c [m, n]."""
    ka, na, ma, ms = blocking.ka, blocking.na, blocking.ma, blocking.ms
    if k % ka or n % (na * cores) or m % ma or ma % ms:
        raise ValueError(f"library GEMM {m}x{n}x{k} on {cores} cores: blocks {blocking} must divide it")
    if cores > 1 and n // cores // na * (m // ma) < 3:
        raise ValueError(f"library GEMM {m}x{n}x{k} on {cores} cores: fewer than 3 C blocks per core and k block")
    addr = {"a": 0, "b": F32 * m * k, "c_in": F32 * (m * k + k * n), "c": F32 * (m * k + k * n + m * n)}
    code = []
    for ko in range(k // ka):
        code.append(isa.make("dma", ch=0, src=("DRAM", addr["a"] + F32 * ko * ka), src_stride=(0, k, 1),
                             dst=("GSM", 0), dst_stride=(0, ka, 1), shape=(1, m, ka),
                             wait=tuple(SEMAPHORES_PER_CORE * c + 1 for c in range(cores)) if ko else (),
                             signal=tuple(SEMAPHORES_PER_CORE * c for c in range(cores))))
        for core in range(cores):
            code += core_k_block(addr, m, n, k, blocking, cores, core, ko)
    symbols = [Symbol("a", "input", addr["a"], (m, k)), Symbol("b", "input", addr["b"], (k, n)),
               Symbol("c_in", "input", addr["c_in"], (m, n)), Symbol("c", "output", addr["c"], (m, n))]
    return Program(target, code, symbols, dram_bytes=addr["c"] + F32 * m * n)


def core_k_block(addr: dict, m: int, n: int, k: int, blocking: Blocking, cores: int, core: int, ko: int) -> list:
    """One core's part of k block `ko`: per column block its B load, per C block the C load, the
    A tiles' matmuls and the C store, with the semaphores of every buffer."""
    ka, na, ma, ms = blocking.ka, blocking.na, blocking.ma, blocking.ms
    sem, ch = SEMAPHORES_PER_CORE * core, 3 * core
    a_full, a_free, b_full, b_free, c_full, c_done, c_free = (sem + i for i in (0, 1, 2, 4, 6, 9, 12))
    columns = n // cores // na  # column blocks per core
    per_k = columns * (m // ma)  # C blocks per k block
    b_total, c_total = k // ka * columns, k // ka * per_k
    reload = per_k < 3  # (one core only) else the third C buffer's wait orders a reload after its store
    code = []
    for ni in range(columns):
        col = core * columns * na + ni * na
        b_count = ko * columns + ni
        code.append(isa.make("dma", ch=ch, src=("DRAM", addr["b"] + F32 * (ko * ka * n + col)), src_stride=(0, n, 1),
                             dst=("AM", F32 * ka * na * (b_count % 2)), cores=(core,), dst_stride=(0, na, 1),
                             shape=(1, ka, na), wait=(b_free + b_count % 2,) if b_count >= 2 else (),
                             signal=(b_full + b_count % 2,)))
        for mi in range(m // ma):
            h = ko * per_k + ni * (m // ma) + mi
            c_buf = F32 * (2 * ka * na + ma * na * (h % 3))
            dram = F32 * (mi * ma * n + col)
            code.append(isa.make("dma", ch=ch + 1, src=("DRAM", (addr["c_in"] if ko == 0 else addr["c"]) + dram),
                                 src_stride=(0, n, 1), dst=("AM", c_buf), cores=(core,), dst_stride=(0, na, 1),
                                 shape=(1, ma, na), signal=(c_full + h % 3,),
                                 wait=(*((c_free + h % 3,) if h >= 3 else ()), *((C_STORED,) if reload and ko else ()))))
            for s in range(ma // ms):
                first, last = s == 0, s == ma // ms - 1
                wait = [c_full + h % 3] if first else []
                if first and mi == 0:
                    wait += [b_full + b_count % 2] + ([a_full] if ni == 0 else [])
                signal = [c_done + h % 3] if last else []
                if last and mi == m // ma - 1:
                    signal += ([b_free + b_count % 2] if b_count + 2 < b_total else []) + \
                              ([a_free] if ni == columns - 1 and ko < k // ka - 1 else [])
                code.append(isa.make("matmul", core=core, mnk=(ms, na, ka), a=("GSM", F32 * (mi * ma + s * ms) * ka),
                                     a_stride=(0, ka, 1), b=("AM", F32 * ka * na * (b_count % 2)), b_stride=(0, na, 1),
                                     c=("AM", c_buf + F32 * s * ms * na), c_stride=(0, na, 1), acc=1,
                                     wait=tuple(wait), signal=tuple(signal)))
            code.append(isa.make("dma", ch=ch + 2, src=("AM", c_buf), src_core=core, src_stride=(0, na, 1),
                                 dst=("DRAM", addr["c"] + dram), dst_stride=(0, n, 1), shape=(1, ma, na),
                                 wait=(c_done + h % 3,),
                                 signal=(*((c_free + h % 3,) if h + 3 < c_total else ()),
                                         *((C_STORED,) if reload and h + per_k < c_total else ()))))
    return code
