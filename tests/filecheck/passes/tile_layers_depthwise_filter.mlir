// RUN: rm -rf %t && mkdir -p %t && cp %s %t/in.mlir
// RUN: python -c "import numpy as np; np.savez('%t/in.weights.npz', unused=np.ones(1, np.float32))"
// RUN: nncc-opt %t/in.mlir -p 'partition-cores{target=vector},tile-layers' | filecheck %s
// tile-layers writes a depthwise conv's backward-filter (MobileNetV2's stride-2 3x3) as a nest of
// its own: dW[c, 0, i, j] = sum over (n, y, x) of x[n, c, 2 y + i - 1, 2 x + j - 1] dy[n, c, y, x].
// x is read through two views of its rows at stride 2 (odd rows: kernel rows 0 and 2, whose
// windows are one load of 9 rows; even rows: kernel row 1), whole rows of 17 columns with the
// pads (one DRAM run each); each tap's product with the dy block is a `tile.map mul` from its
// row and column, every second column (channels x images merged: [%tc * 2, 8, 8]); one
// `tile.reduce sum` adds each (tap, channel)'s products, across the steps of dy rows
// (`reduce %r`), and the [tap][c] tile is stored into dW seen as (taps, C).

// CHECK:      %dw = tile.nest "dw" (%x, %dy) -> tensor<32x1x3x3xf32> attributes {op = "nn.conv2d_backward_filter", onnx_nodes = []} {
// CHECK:        %Yv = tile.view %Y offset 0 sizes [9, 32] strides [1, 9]
// CHECK-NEXT:   %Xv0 = tile.view %X offset 16 sizes [2, 32, 8, 16] strides [8192, 256, 32, 1]
// CHECK-NEXT:   %Xv1 = tile.view %X offset 0 sizes [2, 32, 8, 16] strides [8192, 256, 32, 1]
// CHECK:        tile.for %c[%tc] = 0 to 32 step {{[0-9]+}} cores 4 order naive {
// CHECK-NEXT:     tile.for %r[%tr] = 0 to 8 step 8 order naive {
// CHECK-NEXT:       tile.load %Xv0[0, %c, %r - 1, -1] [2, %tc, 9, 17] -> %raw[0] dims [1, 0, 2, 3]
// CHECK-NEXT:       tile.load %Xv1[0, %c, %r, -1] [2, %tc, 8, 17] -> %raw[%tc * 306] dims [1, 0, 2, 3]
// CHECK-NEXT:       tile.load %DY[0, %c, %r, 0] [2, %tc, 8, 8] -> %[[DY:.*]][0] dims [1, 0, 2, 3]
// CHECK-NEXT:       tile.map mul %raw[0] strides [153, 17, 2], %[[DY]][0] -> %prod[0] shape [%tc * 2, 8, 8]
// CHECK-NEXT:       tile.map mul %raw[1] strides [153, 17, 2], %[[DY]][0] -> %prod[%tc * 128] shape [%tc * 2, 8, 8]
// CHECK-NEXT:       tile.map mul %raw[2] strides [153, 17, 2], %[[DY]][0] -> %prod[%tc * 256] shape [%tc * 2, 8, 8]
// CHECK-NEXT:       tile.map mul %raw[%tc * 306] strides [136, 17, 2], %[[DY]][0] -> %prod[%tc * 384] shape [%tc * 2, 8, 8]
// CHECK-NEXT:       tile.map mul %raw[%tc * 306 + 1] strides [136, 17, 2], %[[DY]][0] -> %prod[%tc * 512] shape [%tc * 2, 8, 8]
// CHECK-NEXT:       tile.map mul %raw[%tc * 306 + 2] strides [136, 17, 2], %[[DY]][0] -> %prod[%tc * 640] shape [%tc * 2, 8, 8]
// CHECK-NEXT:       tile.map mul %raw[17] strides [153, 17, 2], %[[DY]][0] -> %prod[%tc * 768] shape [%tc * 2, 8, 8]
// CHECK-NEXT:       tile.map mul %raw[18] strides [153, 17, 2], %[[DY]][0] -> %prod[%tc * 896] shape [%tc * 2, 8, 8]
// CHECK-NEXT:       tile.map mul %raw[19] strides [153, 17, 2], %[[DY]][0] -> %prod[%tc * 1024] shape [%tc * 2, 8, 8]
// CHECK-NEXT:       tile.reduce sum %prod[0] -> %out[0] shape [%tc * 9, 16, 8] reduce %r
// CHECK-NEXT:     }
// CHECK-NEXT:     tile.store %out[0] -> %Yv[0, %c] [9, %tc] dims [0, 1]

builtin.module attributes {nn.weights = "in.weights.npz"} {
  func.func @main(%x: tensor<2x32x16x16xf32>, %dy: tensor<2x32x8x8xf32>) -> tensor<32x1x3x3xf32> {
    %dw = nn.conv2d_backward_filter %x, %dy strides [2, 2] pads [1, 1, 1, 1] dilations [1, 1] group 32 : (tensor<2x32x16x16xf32>, tensor<2x32x8x8xf32>) -> tensor<32x1x3x3xf32>
    func.return %dw : tensor<32x1x3x3xf32>
  }
}
