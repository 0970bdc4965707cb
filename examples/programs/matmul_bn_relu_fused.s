# Y = relu((X . W) * scale + shift) on the fusion target: batch norm and ReLU fused as
# post-processing of the matrix unit's output. The post unit processes tile 0 while the matrix
# unit computes tile 1 (Yang, Wang, Zhang 2023: post-processing overlapped with the compute layer).
#
# DRAM: X 0x0 (64,32), W 0x2000 (32,32), scale 0x3000 (32), shift 0x3080 (32), Y 0x3100 (64,32)
# IBUF: X tiles 0x0, 0x1000.  WBUF: W 0x0, scale|shift 0x1000.  OBUF: acc tiles 0x0, 0x1000; Y tiles 0x2000, 0x3000
# Semaphores: 0 W, 1 scale|shift, 2 X, 4/5 tile 0/1 accumulated, 6/7 tile 0/1 post-processed.
.nncc 1
.target fusion
.mode inference
.dram 0x5100
.symbol input X 0x0 64,32 float32
.symbol weight W 0x2000 32,32 float32
.symbol weight scale 0x3000 32 float32
.symbol weight shift 0x3080 32 float32
.symbol output Y 0x3100 64,32 float32

layer name="fc_bn_relu" op="hand-written" nodes="MatMul_0,BatchNormalization_1,Relu_2" phase=forward
    dma ch=0 src=DRAM[0x2000] src_stride=0,0,1 dst=WBUF[0x0] dst_stride=0,0,1 shape=1,1,1024 signal=0
    dma ch=0 src=DRAM[0x3000] src_stride=0,0,1 dst=WBUF[0x1000] dst_stride=0,0,1 shape=1,1,64 signal=1
    dma ch=1 src=DRAM[0x0] src_stride=0,0,1 dst=IBUF[0x0] dst_stride=0,0,1 shape=1,1,2048 signal=2
    matmul mnk=32,32,32 a=IBUF[0x0] a_stride=0,32,1 b=WBUF[0x0] b_stride=0,32,1 c=OBUF[0x0] c_stride=0,32,1 wait=0,2 signal=4
    matmul mnk=32,32,32 a=IBUF[0x1000] a_stride=0,32,1 b=WBUF[0x0] b_stride=0,32,1 c=OBUF[0x1000] c_stride=0,32,1 signal=5
    vfma unit=post shape=1,32,32 x=OBUF[0x0] x_stride=0,32,1 y=WBUF[0x1000] y_stride=0,0,1 w=WBUF[0x1080] w_stride=0,0,1 z=OBUF[0x2000] z_stride=0,32,1 wait=1,4
    vact unit=post func=relu shape=1,32,32 x=OBUF[0x2000] x_stride=0,32,1 z=OBUF[0x2000] z_stride=0,32,1 signal=6
    vfma unit=post shape=1,32,32 x=OBUF[0x1000] x_stride=0,32,1 y=WBUF[0x1000] y_stride=0,0,1 w=WBUF[0x1080] w_stride=0,0,1 z=OBUF[0x3000] z_stride=0,32,1 wait=5
    vact unit=post func=relu shape=1,32,32 x=OBUF[0x3000] x_stride=0,32,1 z=OBUF[0x3000] z_stride=0,32,1 signal=7
    dma ch=0 src=OBUF[0x2000] src_stride=0,0,1 dst=DRAM[0x3100] dst_stride=0,0,1 shape=1,1,1024 wait=6
    dma ch=0 src=OBUF[0x3000] src_stride=0,0,1 dst=DRAM[0x4100] dst_stride=0,0,1 shape=1,1,1024 wait=7
