// RUN: rm -rf %t && mkdir -p %t && cp %s %t/in.mlir
// RUN: python -c "import numpy as np; np.savez('%t/in.weights.npz', unused=np.ones(1, np.float32))"
// RUN: nncc-opt %t/in.mlir -p 'partition-cores{target=vector},tile-layers' | filecheck %s
// tile-layers writes a conv's backward-filter (group 1) as a gemm: dW^T[(tap, c), o] = sum over
// (n, y, x) of x[n, c, 2 y + i - 1, 2 x + j] dy[n, o, y, x] (strides 2, pads top 1, left 0).
// x is read through views of its rows at the row stride, one per row phase of the kernel
// rows; the column stride is 2, so (the cost model's choice) each kernel row's x block is
// loaded once, whole rows of 9 columns (one DRAM run each: at stride 2 every float would be a
// burst of its own; the pads are slice bounds), into `raw`, and each of its three taps' runs is
// copied out on chip (`tile.map copy`, every second column from the tap's) into `in`, so that
// every row of the gemm's broadcast operand is one contiguous run of k = batch x dy rows x OW =
// 2 x 4 x 4;
// the dy block [n][y][x][o] is b, shared by the cores, which take different input channels; the
// gemm is a 1x1 tile.conv over a 1 x (taps x channels) image of k channels, accumulated over the
// dy row blocks; its [tap][c][o] tile is stored into dW seen as (taps, C, O).

// CHECK:      %dw = tile.nest "dw" (%x, %dy) -> tensor<16x8x3x3xf32> attributes {op = "nn.conv2d_backward_filter", onnx_nodes = []} {
// CHECK-NEXT: ^bb0(%X: tensor<2x8x8x8xf32>, %DY: tensor<2x16x4x4xf32>, %Y: tensor<16x8x3x3xf32>):
// CHECK-NEXT: %DYv = tile.view %DY offset 0 sizes [2, 4, 4, 16] strides [256, 4, 1, 16] : tensor<2x16x4x4xf32> -> tensor<2x4x4x16xf32>
// CHECK-NEXT: %Yv = tile.view %Y offset 0 sizes [9, 8, 16] strides [1, 9, 72] : tensor<16x8x3x3xf32> -> tensor<9x8x16xf32>
// CHECK-NEXT: %Xv0 = tile.view %X offset 8 sizes [2, 8, 4, 8] strides [512, 64, 16, 1] : tensor<2x8x8x8xf32> -> tensor<2x8x4x8xf32>
// CHECK-NEXT: %Xv1 = tile.view %X offset 0 sizes [2, 8, 4, 8] strides [512, 64, 16, 1] : tensor<2x8x8x8xf32> -> tensor<2x8x4x8xf32>
// CHECK-NEXT: %in = tile.buffer "input" slots 2 : memref<1x18x32xf32, "AM">
// CHECK-NEXT: %wt = tile.buffer "weight" slots 2 shared : memref<512xf32, "AM">
// CHECK-NEXT: %out = tile.buffer "output" slots 2 : memref<1x18x16xf32, "AM">
// CHECK-NEXT: %raw = tile.buffer "input" slots 2 : memref<1x6x72xf32, "AM">
// CHECK-NEXT: tile.for %oc[%toc] = 0 to 16 step 16 order naive {
// CHECK-NEXT:   tile.for %c[%tc] = 0 to 8 step 2 cores 4 order naive {
// CHECK-NEXT:     tile.for %r[%tr] = 0 to 4 step 4 order naive {
// CHECK-NEXT:       tile.load %Xv0[0, %c, %r - 1, 0] [2, %tc, 4, 9] -> %raw[0] dims [1, 0, 2, 3]
// CHECK-NEXT:       tile.map copy %raw[0] strides [72, 9, 2] -> %in[0] shape [%tc, 8, 4]
// CHECK-NEXT:       tile.map copy %raw[1] strides [72, 9, 2] -> %in[%tc * 32] shape [%tc, 8, 4]
// CHECK-NEXT:       tile.map copy %raw[2] strides [72, 9, 2] -> %in[%tc * 64] shape [%tc, 8, 4]
// CHECK-NEXT:       tile.load %Xv1[0, %c, %r, 0] [2, %tc, 4, 9] -> %raw[%tc * 72] dims [1, 0, 2, 3]
// CHECK-NEXT:       tile.map copy %raw[%tc * 72] strides [72, 9, 2] -> %in[%tc * 96] shape [%tc, 8, 4]
// CHECK-NEXT:       tile.map copy %raw[%tc * 72 + 1] strides [72, 9, 2] -> %in[%tc * 128] shape [%tc, 8, 4]
// CHECK-NEXT:       tile.map copy %raw[%tc * 72 + 2] strides [72, 9, 2] -> %in[%tc * 160] shape [%tc, 8, 4]
// CHECK-NEXT:       tile.load %Xv0[0, %c, %r, 0] [2, %tc, 4, 9] -> %raw[%tc * 144] dims [1, 0, 2, 3]
// CHECK-NEXT:       tile.map copy %raw[%tc * 144] strides [72, 9, 2] -> %in[%tc * 192] shape [%tc, 8, 4]
// CHECK-NEXT:       tile.map copy %raw[%tc * 144 + 1] strides [72, 9, 2] -> %in[%tc * 224] shape [%tc, 8, 4]
// CHECK-NEXT:       tile.map copy %raw[%tc * 144 + 2] strides [72, 9, 2] -> %in[%tc * 256] shape [%tc, 8, 4]
// CHECK-NEXT:       tile.load %DYv[0, %r, 0, %oc] [2, 4, 4, %toc] -> %wt[0] dims [0, 1, 2, 3]
// CHECK-NEXT:       tile.conv %in[0], %wt[0] -> %out[0] sizes [1, %tc * 9, 32, %toc] kernel [1, 1] strides [1, 1] dilations [1, 1] reduce %r
// CHECK-NEXT:     }
// CHECK-NEXT:     tile.store %out[0] -> %Yv[0, %c, %oc] [9, %tc, %toc] dims [0, 1, 2]
// CHECK-NEXT:   }
// CHECK-NEXT: }

builtin.module attributes {nn.weights = "in.weights.npz"} {
  func.func @main(%x: tensor<2x8x8x8xf32>, %dy: tensor<2x16x4x4xf32>) -> tensor<16x8x3x3xf32> {
    %dw = nn.conv2d_backward_filter %x, %dy strides [2, 2] pads [1, 0, 0, 1] dilations [1, 1] group 1 : (tensor<2x8x8x8xf32>, tensor<2x16x4x4xf32>) -> tensor<16x8x3x3xf32>
    func.return %dw : tensor<16x8x3x3xf32>
  }
}
