// RUN: rm -rf %t && mkdir -p %t && cp %s %t/in.mlir
// RUN: python -c "import numpy as np; np.savez('%t/in.weights.npz', unused=np.ones(1, np.float32))"
// RUN: nncc-opt %t/in.mlir -p 'partition-cores{target=fusion},tile-layers' | filecheck %s
// tile-layers writes a 3x3 stride-1 conv's backward-filter (pads 1) on `fusion` with the taps
// read in place (the cost model's pick among its mappings): per step x's 16 dy rows and the
// kernel's reach (18 rows) of both images, 18 columns each (padding from the edges), are loaded
// once, one box per channel, as [c][row][image][column] at a channel pitch of 2 x 576 (k =
// 16 x 2 x 18); dy's rows as [row][image][column][o] with zeros in columns 16 and 17 (padding
// of its view); tap (i, j) is one 1x1 `tile.conv` of a 1 x C image of k channels whose columns
// are 2 k apart (`strides [1, 2]`), from offset i x 2 x 18 + j of the staged rows; the two
// elements the last taps read past the rows are zeroed (`tile.fill ... pitch 1152`); each tap's
// [c][o] block at a fixed pitch in `out`, stored into dW seen as (taps, C, O).

// CHECK:      %dw = tile.nest "dw" (%x, %dy) -> tensor<32x32x3x3xf32> attributes {op = "nn.conv2d_backward_filter", onnx_nodes = []} {
// CHECK-NEXT: ^bb0(%X: tensor<2x32x16x16xf32>, %DY: tensor<2x32x16x16xf32>, %Y: tensor<32x32x3x3xf32>):
// CHECK-NEXT:   %Xv0 = tile.view %X offset 0 sizes [2, 32, 16, 16] strides [8192, 256, 16, 1] : tensor<2x32x16x16xf32> -> tensor<2x32x16x16xf32>
// CHECK-NEXT:   %DYv = tile.view %DY offset 0 sizes [16, 2, 16, 32] strides [16, 8192, 1, 256] : tensor<2x32x16x16xf32> -> tensor<16x2x16x32xf32>
// CHECK-NEXT:   %Yv = tile.view %Y offset 0 sizes [9, 32, 32] strides [1, 9, 288] : tensor<32x32x3x3xf32> -> tensor<9x32x32xf32>
// CHECK-NEXT:   %raw = tile.buffer "input" slots 2 : memref<1x36864xf32, "IBUF">
// CHECK-NEXT:   %wt = tile.buffer "weight" slots 2 shared : memref<18432xf32, "WBUF">
// CHECK-NEXT:   %out = tile.buffer "output" slots 2 : memref<1x288x32xf32, "OBUF">
// CHECK-NEXT:   tile.for %oc[%toc] = 0 to 32 step 32 order naive {
// CHECK-NEXT:     tile.for %c[%tc] = 0 to 32 step 32 cores 1 order naive {
// CHECK-NEXT:       tile.for %r[%tr] = 0 to 16 step 16 order naive {
// CHECK-NEXT:         tile.load %Xv0[0, %c, %r - 1, -1] [2, %tc, 18, 18] -> %raw[0] strides [1152, 36, 18, 1] dims [1, 2, 0, 3]
// CHECK-NEXT:         tile.fill %raw[648] sizes [%tc, 1, 2] pitch 1152 value 0.0
// CHECK-NEXT:         tile.load %DYv[%r, 0, 0, %oc] [16, 2, 18, %toc] -> %wt[0] dims [0, 1, 2, 3]
// CHECK-NEXT:         tile.conv %raw[0], %wt[0] -> %out[0] sizes [1, %tc, 576, %toc] kernel [1, 1] strides [1, 2] dilations [1, 1] reduce %r
// CHECK-NEXT:         tile.conv %raw[1], %wt[0] -> %out[1024] sizes [1, %tc, 576, %toc] kernel [1, 1] strides [1, 2] dilations [1, 1] reduce %r
// CHECK-NEXT:         tile.conv %raw[2], %wt[0] -> %out[2048] sizes [1, %tc, 576, %toc] kernel [1, 1] strides [1, 2] dilations [1, 1] reduce %r
// CHECK-NEXT:         tile.conv %raw[36], %wt[0] -> %out[3072] sizes [1, %tc, 576, %toc] kernel [1, 1] strides [1, 2] dilations [1, 1] reduce %r
// CHECK-NEXT:         tile.conv %raw[37], %wt[0] -> %out[4096] sizes [1, %tc, 576, %toc] kernel [1, 1] strides [1, 2] dilations [1, 1] reduce %r
// CHECK-NEXT:         tile.conv %raw[38], %wt[0] -> %out[5120] sizes [1, %tc, 576, %toc] kernel [1, 1] strides [1, 2] dilations [1, 1] reduce %r
// CHECK-NEXT:         tile.conv %raw[72], %wt[0] -> %out[6144] sizes [1, %tc, 576, %toc] kernel [1, 1] strides [1, 2] dilations [1, 1] reduce %r
// CHECK-NEXT:         tile.conv %raw[73], %wt[0] -> %out[7168] sizes [1, %tc, 576, %toc] kernel [1, 1] strides [1, 2] dilations [1, 1] reduce %r
// CHECK-NEXT:         tile.conv %raw[74], %wt[0] -> %out[8192] sizes [1, %tc, 576, %toc] kernel [1, 1] strides [1, 2] dilations [1, 1] reduce %r
// CHECK-NEXT:       }
// CHECK-NEXT:       tile.store %out[0] strides [1024, %toc, 1] -> %Yv[0, %c, %oc] [9, %tc, %toc] dims [0, 1, 2]
// CHECK-NEXT:     }
// CHECK-NEXT:   }

builtin.module attributes {nn.weights = "in.weights.npz"} {
  func.func @main(%x: tensor<2x32x16x16xf32>, %dy: tensor<2x32x16x16xf32>) -> tensor<32x32x3x3xf32> {
    %dw = nn.conv2d_backward_filter %x, %dy strides [1, 1] pads [1, 1, 1, 1] dilations [1, 1] group 1 : (tensor<2x32x16x16xf32>, tensor<2x32x16x16xf32>) -> tensor<32x32x3x3xf32>
    func.return %dw : tensor<32x32x3x3xf32>
  }
}
