// RUN: rm -rf %t && mkdir -p %t && cp %s %t/in.mlir
// RUN: python -c "import numpy as np; np.savez('%t/in.weights.npz', unused=np.ones(1, np.float32))"
// RUN: nncc-opt %t/in.mlir -p 'tile-layers{target=fusion}' | filecheck %s
// tile-layers writes max pooling's gradient (ResNet's 3x3 / 2 pool, pad 1, on 8x8) as one nest
// (`pool_backward_nest.py`): per tile of dx (m = 2 window rows: dx rows 2r .. 2r + 3, the whole
// width, 32 channels) x's window rows r - 1 .. r + 1 (the halo window above; -inf beyond the
// image) and dy's (zeros beyond the windows). On the pre unit the running maxima P_2 .. P_9 of the
// taps (vmax; P_9 the window's maximum M) and Q_t = (P_{t+1} == M) (cmpeq); on the post unit each
// tap's first-maximum mask f_t = Q_t - Q_{t-1} times dy, written into its strided view of the dx
// tile (mul) or added (fma) when an earlier tap reaches the same positions; no fill (every
// position is some writer's); the tile stored once, its last rows clipped to the image.

// CHECK:      %dx = tile.nest "dx" (%dy, %x) -> tensor<1x32x8x8xf32> attributes {op = "nn.max_pool_backward", onnx_nodes = [], window_max = "recompute"} {
// CHECK:        tile.for %c[%tc] = 0 to 32 step 32, %n[%tn] = 0 to 1 step 1, %r[%tr] = 0 to 4 step 2 cores 1 order naive {
// CHECK-NEXT:     tile.load %X[%n, %c, %r * 2 - 1, -1] [1, %tc, 7, 9] -> %x_1[0] dims [2, 3, 1] pad -inf
// CHECK-NEXT:     tile.load %DY[%n, %c, %r, 0] [1, %tc, 3, 4] -> %dy_1[0] dims [2, 3, 1]
// CHECK-NEXT:     tile.map max %x_1[0] strides [%tc * 18, %tc * 2, 1], %x_1[%tc] strides [%tc * 18, %tc * 2, 1] -> %p[0] strides [%tc * 4, %tc, 1] shape [3, 4, %tc] {unit = "pre"}
// CHECK-NEXT:     tile.map max %p[0] strides [%tc * 4, %tc, 1], %x_1[%tc * 2] strides [%tc * 18, %tc * 2, 1] -> %p[%tc * 12] strides [%tc * 4, %tc, 1] shape [3, 4, %tc] {unit = "pre"}
// CHECK-COUNT-6:  tile.map max {{.*}} {unit = "pre"}
// CHECK-NEXT:     tile.map cmpeq %x_1[0] strides [%tc * 18, %tc * 2, 1], %p[%tc * 84] strides [%tc * 4, %tc, 1] -> %q[0] strides [%tc * 4, %tc, 1] shape [3, 4, %tc] {unit = "pre"}
// CHECK-COUNT-7:  tile.map cmpeq %p{{.*}}, %p[%tc * 84] {{.*}} {unit = "pre"}
// CHECK-NOT:      tile.fill
// CHECK-NEXT:     tile.map sub %q[%tc * 16] strides [%tc * 4, %tc, 1], %q[%tc * 4] strides [%tc * 4, %tc, 1] -> %f[%tc * 4] strides [%tc * 4, %tc, 1] shape [2, 4, %tc] {unit = "post"}
// CHECK-NEXT:     tile.map mul %f[%tc * 4] strides [%tc * 4, %tc, 1], %dy_1[%tc * 4] strides [%tc * 4, %tc, 1] -> %dx_1[%tc * 8] strides [%tc * 16, %tc * 2, 1] shape [2, 4, %tc] {unit = "post"}
// CHECK:          tile.map fma %f{{.*}}, %dy_1{{.*}}, %dx_1{{.*}} -> %dx_1{{.*}} {unit = "post"}
// CHECK:          %rows = tile.min [4, %r * (-2) + 8]
// CHECK-NEXT:     tile.store %dx_1[0] -> %Y[%n, %c, %r * 2, 0] [1, %tc, %rows, 8] dims [2, 3, 1]

builtin.module attributes {nn.weights = "in.weights.npz"} {
  func.func @main(%dy: tensor<1x32x4x4xf32>, %x: tensor<1x32x8x8xf32>) -> tensor<1x32x8x8xf32> {
    %dx = nn.max_pool_backward %dy, %x kernel [3, 3] strides [2, 2] pads [1, 1, 1, 1] dilations [1, 1] ceil_mode false : (tensor<1x32x4x4xf32>, tensor<1x32x8x8xf32>) -> tensor<1x32x8x8xf32>
    func.return %dx : tensor<1x32x8x8xf32>
  }
}
