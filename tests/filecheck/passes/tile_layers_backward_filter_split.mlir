// RUN: rm -rf %t && mkdir -p %t && cp %s %t/in.mlir
// RUN: python -c "import numpy as np; np.savez('%t/in.weights.npz', unused=np.ones(1, np.float32))"
// RUN: nncc-opt %t/in.mlir -p 'partition-cores{target=vector},tile-layers' | filecheck %s
// A backward-filter with 3 input channels (VGG's conv1_1 at 64x64): its gemm has 27 rows of
// (tap, channel), one channel tile, which would leave three of the four cores idle. The cost
// model picks the reduction split over the cores: core %p sums dy rows [16 p, 16 p + 16) into
// its own partial dW (rows of [part][tap][c][o]); x's rows are staged once per kernel row (66
// columns with the pads) and each tap's run copied out on chip; then a second nest adds the
// four parts and stores dW (O, C, KH, KW) seen as (taps, C, O).

// CHECK:      %dw_parts = tile.nest "dw_parts" (%x, %dy) -> tensor<36x3x64xf32> attributes {op = "nn.conv2d_backward_filter", onnx_nodes = []} {
// CHECK:        %Yv = tile.view %Y offset 0 sizes [36, 3, 64] strides [192, 64, 1]
// CHECK:        %wt = tile.buffer "weight" slots 2 : memref<{{[0-9]+}}xf32, "AM">
// CHECK:        tile.for %oc[%toc] = 0 to 64 step 64 order naive {
// CHECK-NEXT:     tile.for %p[%tp] = 0 to 4 step 1 cores 4 order naive {
// CHECK-NEXT:       tile.for %c[%tc] = 0 to 3 step 3 order naive {
// CHECK-NEXT:         tile.for %r[%tr] = 0 to 16 step [[R:[0-9]+]] order naive {
// CHECK-NEXT:           tile.load %Xv0[0, %c, %p * 16 + %r - 1, -1] [2, %tc, [[R]], 66] -> %raw[0] dims [1, 0, 2, 3]
// CHECK-NEXT:           tile.map copy %raw[0] strides [[[RAW:[0-9]+]], 66, 1] -> %in[0] shape [%tc, {{[0-9]+}}, 64]
// CHECK-NEXT:           tile.map copy %raw[1] strides [[[RAW]], 66, 1]
// CHECK-NEXT:           tile.map copy %raw[2] strides [[[RAW]], 66, 1]
// CHECK-NEXT:           tile.load %Xv0[0, %c, %p * 16 + %r, -1] [2, %tc, [[R]], 66] -> %raw[%tc * [[RAW]]] dims [1, 0, 2, 3]
// CHECK:                tile.load %DYv[0, %p * 16 + %r, 0, %oc] [2, [[R]], 64, %toc] -> %wt[0] dims [0, 1, 2, 3]
// CHECK-NEXT:           tile.conv %in[0], %wt[0] -> %out[0] sizes [1, %tc * 9, {{[0-9]+}}, %toc] kernel [1, 1] strides [1, 1] dilations [1, 1] reduce %r
// CHECK-NEXT:         }
// CHECK-NEXT:         tile.store %out[0] -> %Yv[%p * 9, %c, %oc] [9, %tc, %toc] dims [0, 1, 2]
// CHECK:        %dw = tile.nest "dw" (%dw_parts) -> tensor<64x3x3x3xf32> attributes {op = "nn.conv2d_backward_filter", onnx_nodes = []} {
// CHECK:          %Pv = tile.view %P offset 0 sizes [4, 9, 3, 64] strides [1728, 192, 64, 1]
// CHECK-NEXT:     %[[YV:.*]] = tile.view %{{.*}} offset 0 sizes [9, 3, 64] strides [1, 9, 27]
// CHECK:          tile.for %[[C:.*]][%[[TC:.*]]] = 0 to 3 step 3 cores 4 order naive {
// CHECK-NEXT:       tile.load %Pv[0, 0, %[[C]], 0] [4, 9, %[[TC]], 64] -> %[[IN:.*]][0] dims [0, 1, 2, 3]
// CHECK-NEXT:       tile.map add %[[IN]][0], %[[IN]][%[[TC]] * 576] -> %[[OUT:.*]][0] shape [9, %[[TC]], 64]
// CHECK-NEXT:       tile.map add %[[OUT]][0], %[[IN]][%[[TC]] * 1152] -> %[[OUT]][0] shape [9, %[[TC]], 64]
// CHECK-NEXT:       tile.map add %[[OUT]][0], %[[IN]][%[[TC]] * 1728] -> %[[OUT]][0] shape [9, %[[TC]], 64]
// CHECK-NEXT:       tile.store %[[OUT]][0] -> %[[YV]][0, %[[C]], 0] [9, %[[TC]], 64] dims [0, 1, 2]

builtin.module attributes {nn.weights = "in.weights.npz"} {
  func.func @main(%x: tensor<2x3x64x64xf32>, %dy: tensor<2x64x64x64xf32>) -> tensor<64x3x3x3xf32> {
    %dw = nn.conv2d_backward_filter %x, %dy strides [1, 1] pads [1, 1, 1, 1] dilations [1, 1] group 1 : (tensor<2x3x64x64xf32>, tensor<2x64x64x64xf32>) -> tensor<64x3x3x3xf32>
    func.return %dw : tensor<64x3x3x3xf32>
  }
}
