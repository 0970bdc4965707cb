# y = relu(x * scale + shift + r): an inference batch norm (per-channel scale/shift), a residual
# add and a ReLU over 16 pixels x 64 channels (HWC) on one core of the vector target.
# scale and shift are broadcast over pixels with a stride-0 operand.
#
# DRAM: x 0x0, r 0x1000, scale 0x2000, shift 0x2100, y 0x2200
# AM:   x 0x0, r 0x1000, scale|shift 0x2000, y 0x2200
.nncc 1
.target vector
.mode inference
.dram 0x3200
.symbol input x 0x0 16,64 float32
.symbol input r 0x1000 16,64 float32
.symbol weight scale 0x2000 64 float32
.symbol weight shift 0x2100 64 float32
.symbol output y 0x2200 16,64 float32

layer name="bn_add_relu" op="hand-written" nodes="BatchNormalization_0,Add_1,Relu_2" phase=forward
    dma ch=0 src=DRAM[0x0] src_stride=0,0,1 dst=AM[0x0] dst_stride=0,0,1 shape=1,1,1024 signal=0
    dma ch=1 src=DRAM[0x2000] src_stride=0,0,1 dst=AM[0x2000] dst_stride=0,0,1 shape=1,1,128 signal=1
    dma ch=1 src=DRAM[0x1000] src_stride=0,0,1 dst=AM[0x1000] dst_stride=0,0,1 shape=1,1,1024 signal=2
    vfma shape=1,16,64 x=AM[0x0] x_stride=0,64,1 y=AM[0x2000] y_stride=0,0,1 w=AM[0x2100] w_stride=0,0,1 z=AM[0x2200] z_stride=0,64,1 wait=0,1
    vadd shape=1,16,64 x=AM[0x2200] x_stride=0,64,1 y=AM[0x1000] y_stride=0,64,1 z=AM[0x2200] z_stride=0,64,1 wait=2
    vact func=relu shape=1,16,64 x=AM[0x2200] x_stride=0,64,1 z=AM[0x2200] z_stride=0,64,1 signal=3
    dma src=AM[0x2200] src_stride=0,0,1 dst=DRAM[0x2200] dst_stride=0,0,1 shape=1,1,1024 wait=3
