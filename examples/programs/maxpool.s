# MaxPool 3x3, stride 2, pad 1 over an 8x8x16 (HWC) tensor on one core of the vector target:
# the DMA loads the tile with a one-pixel halo of -inf (the padding), the 16 channels fill the
# 16 lanes, and one vpool computes the 4x4x16 output.
#
# DRAM: x 0x0..0x1000 (8,8,16), y 0x1000..0x1400 (4,4,16).  AM: padded x 0x0 (10,10,16), y 0x1900
.nncc 1
.target vector
.mode inference
.dram 0x1400
.symbol input x 0x0 8,8,16 float32
.symbol output y 0x1000 4,4,16 float32

layer name="pool1" op="nn.max_pool" nodes="MaxPool_0" phase=forward
    dma src=DRAM[0x0] src_stride=128,16,1 dst=AM[0x0] dst_stride=160,16,1 shape=10,10,16 pad=1,1,1,1,0,0 pad_value=-inf signal=0
    vpool func=max shape=4,4,16 window=3,3 x=AM[0x0] x_stride=320,32,1 win_stride=160,16 z=AM[0x1900] z_stride=64,16,1 wait=0 signal=1
    dma src=AM[0x1900] src_stride=0,0,1 dst=DRAM[0x1000] dst_stride=0,0,1 shape=1,1,256 wait=1
