# C[64,32] = A[64,32] . B[32,32] on two cores of the vector target.
# The weights B are read from DRAM once and multicast into both cores' AM; each core computes
# 32 rows of C in two 16-row tiles. A tiles go to the scalar memory SM (broadcast operand) in two
# buffers, so the load of tile 1 overlaps the matmul of tile 0 (double buffering).
#
# DRAM: A 0x0000..0x2000, B 0x2000..0x3000, C 0x3000..0x5000 (row-major fp32)
# AM (per core): B 0x0, C tile 0 0x1000, C tile 1 0x1800.  SM (per core): A tile 0 0x0, A tile 1 0x800
# Semaphores: 0/1 B in core 0/1; 2,3 A tiles of core 0; 4,5 A tiles of core 1; 8..11 C tiles done.
.nncc 1
.target vector
.mode inference
.dram 0x5000
.symbol input A 0x0 64,32 float32
.symbol input B 0x2000 32,32 float32
.symbol output C 0x3000 64,32 float32

layer name="fc" op="fused.gemm" nodes="Gemm_0" phase=forward
    dma ch=0 src=DRAM[0x2000] src_stride=0,0,1 dst=AM[0x0] cores=0,1 dst_stride=0,0,1 shape=1,1,1024 signal=0,1
    dma ch=1 src=DRAM[0x1000] src_stride=0,32,1 dst=SM[0x0] cores=1 dst_stride=0,32,1 shape=1,16,32 signal=4
    dma ch=0 src=DRAM[0x0] src_stride=0,32,1 dst=SM[0x0] dst_stride=0,32,1 shape=1,16,32 signal=2
    dma ch=1 src=DRAM[0x1800] src_stride=0,32,1 dst=SM[0x800] cores=1 dst_stride=0,32,1 shape=1,16,32 signal=5
    dma ch=0 src=DRAM[0x800] src_stride=0,32,1 dst=SM[0x800] dst_stride=0,32,1 shape=1,16,32 signal=3
    matmul core=0 mnk=16,32,32 a=SM[0x0] a_stride=0,32,1 b=AM[0x0] b_stride=0,32,1 c=AM[0x1000] c_stride=0,32,1 wait=0,2 signal=8
    matmul core=0 mnk=16,32,32 a=SM[0x800] a_stride=0,32,1 b=AM[0x0] b_stride=0,32,1 c=AM[0x1800] c_stride=0,32,1 wait=3 signal=9
    matmul core=1 mnk=16,32,32 a=SM[0x0] a_stride=0,32,1 b=AM[0x0] b_stride=0,32,1 c=AM[0x1000] c_stride=0,32,1 wait=1,4 signal=10
    matmul core=1 mnk=16,32,32 a=SM[0x800] a_stride=0,32,1 b=AM[0x0] b_stride=0,32,1 c=AM[0x1800] c_stride=0,32,1 wait=5 signal=11
    dma ch=2 src=AM[0x1000] src_stride=0,0,1 dst=DRAM[0x3000] dst_stride=0,0,1 shape=1,1,512 wait=8
    dma ch=2 src=AM[0x1800] src_stride=0,0,1 dst=DRAM[0x3800] dst_stride=0,0,1 shape=1,1,512 wait=9
    dma ch=3 src=AM[0x1000] src_core=1 src_stride=0,0,1 dst=DRAM[0x4000] dst_stride=0,0,1 shape=1,1,512 wait=10
    dma ch=3 src=AM[0x1800] src_core=1 src_stride=0,0,1 dst=DRAM[0x4800] dst_stride=0,0,1 shape=1,1,512 wait=11
