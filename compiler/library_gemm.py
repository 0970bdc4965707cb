"""The FT-M7032 GEMM library's own single-core schedule, replayed as an nncc program.

Yu et al., "Optimizing General Matrix Multiplications on Modern Multi-core DSPs" (IPDPS 2024),
Fig. 4, NN mode, one core: C = A B + C with A [M, K], B [K, N] row-major in DRAM, blocked as

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
A_FULL, A_FREE, B_FULL, B_FREE, C_FULL, C_DONE, C_FREE, C_STORED = 0, 1, 2, 4, 6, 9, 12, 15  # semaphores (B: 2, C: 3)


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


def library_gemm_program(target: Target, m: int, n: int, k: int, blocking: Blocking) -> Program:
    """C = A B + C_in on core 0 of `target`, in the library's loop order and buffers (module doc).
    Symbols: inputs a [m, k], b [k, n], c_in [m, n]; output c [m, n]."""
    ka, na, ma, ms = blocking.ka, blocking.na, blocking.ma, blocking.ms
    if k % ka or n % na or m % ma or ma % ms:
        raise ValueError(f"library GEMM {m}x{n}x{k}: blocks {blocking} must divide it")
    a_addr, b_addr = 0, F32 * m * k
    c_in_addr = b_addr + F32 * k * n
    c_addr = c_in_addr + F32 * m * n
    b_buf = [F32 * ka * na * j for j in range(2)]
    c_buf = [F32 * (2 * ka * na + ma * na * j) for j in range(3)]
    code, b_count, c_count = [], 0, 0
    b_total, c_total = k // ka * (n // na), k // ka * (n // na) * (m // ma)
    per_k = (n // na) * (m // ma)  # C blocks per k block; with fewer than 3, a reload waits for its store
    for ko in range(k // ka):
        code.append(isa.make("dma", src=("DRAM", a_addr + F32 * ko * ka), src_stride=(0, k, 1), dst=("GSM", 0),
                             dst_stride=(0, ka, 1), shape=(1, m, ka), wait=(A_FREE,) if ko else (),
                             signal=(A_FULL,)))
        for ni in range(n // na):
            code.append(isa.make("dma", src=("DRAM", b_addr + F32 * (ko * ka * n + ni * na)), src_stride=(0, n, 1),
                                 dst=("AM", b_buf[b_count % 2]), dst_stride=(0, na, 1), shape=(1, ka, na),
                                 wait=(B_FREE + b_count % 2,) if b_count >= 2 else (),
                                 signal=(B_FULL + b_count % 2,)))
            for mi in range(m // ma):
                j = c_count % 3
                source = c_in_addr if ko == 0 else c_addr
                code.append(isa.make("dma", ch=1, src=("DRAM", source + F32 * (mi * ma * n + ni * na)),
                                     src_stride=(0, n, 1), dst=("AM", c_buf[j]), dst_stride=(0, na, 1),
                                     shape=(1, ma, na), signal=(C_FULL + j,),
                                     wait=(*((C_FREE + j,) if c_count >= 3 else ()),
                                           *((C_STORED,) if per_k < 3 and ko else ()))))
                for s in range(ma // ms):
                    wait = [C_FULL + j] if s == 0 else []
                    if s == 0 and mi == 0:
                        wait.append(B_FULL + b_count % 2)
                        if ni == 0:
                            wait.append(A_FULL)
                    signal = [C_DONE + j] if s == ma // ms - 1 else []
                    if s == ma // ms - 1 and mi == m // ma - 1:
                        if b_count + 2 < b_total:
                            signal.append(B_FREE + b_count % 2)
                        if ni == n // na - 1 and ko < k // ka - 1:
                            signal.append(A_FREE)
                    code.append(isa.make("matmul", mnk=(ms, na, ka), a=("GSM", F32 * (mi * ma + s * ms) * ka),
                                         a_stride=(0, ka, 1), b=("AM", b_buf[b_count % 2]), b_stride=(0, na, 1),
                                         c=("AM", c_buf[j] + F32 * s * ms * na), c_stride=(0, na, 1), acc=1,
                                         wait=tuple(wait), signal=tuple(signal)))
                code.append(isa.make("dma", ch=2, src=("AM", c_buf[j]), src_stride=(0, na, 1),
                                     dst=("DRAM", c_addr + F32 * (mi * ma * n + ni * na)), dst_stride=(0, n, 1),
                                     shape=(1, ma, na), wait=(C_DONE + j,),
                                     signal=(*((C_FREE + j,) if c_count + 3 < c_total else ()),
                                             *((C_STORED,) if per_k < 3 and c_count + per_k < c_total else ()))))
                c_count += 1
            b_count += 1
    symbols = [Symbol("a", "input", a_addr, (m, k)), Symbol("b", "input", b_addr, (k, n)),
               Symbol("c_in", "input", c_in_addr, (m, n)), Symbol("c", "output", c_addr, (m, n))]
    return Program(target, code, symbols, dram_bytes=c_addr + F32 * m * n)
