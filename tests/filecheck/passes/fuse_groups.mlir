// RUN: rm -rf %t && mkdir -p %t && cp %s %t/in.mlir
// RUN: python -c "import numpy as np; r = np.random.default_rng(0); f = lambda *s: r.standard_normal(s).astype('f4'); np.savez('%t/in.weights.npz', w1=f(32, 8, 1, 1), b1=f(32), wd=f(32, 1, 3, 3), bd=f(32), w2=f(8, 32, 1, 1), b2=f(8), a=f(16, 8, 1, 1), v=f(16, 1, 3, 1), h=f(16, 1, 1, 3), o=f(8, 16, 1, 1), ob=f(8))"
// RUN: nncc-opt %t/in.mlir -p 'partition-cores{target=edge},fuse-groups{always=true}' | filecheck %s
// RUN: nncc-opt %t/in.mlir -p 'partition-cores{target=edge},tile-layers' | filecheck %s --check-prefix=LAYERS
// fuse-groups writes an inverted residual block (1x1 -> depthwise 3x3 -> 1x1 + residual) and a
// CP-decomposed conv (1x1 -> depthwise 3x1 stride 2 -> depthwise 1x3 stride 2 -> 1x1) each as one
// nest: strips of output rows, the input rows each strip needs (halo rows clipped at the image
// border), blocks of expanded channels, the intermediates in on-chip buffers with a zero border
// for the next depthwise's padding (the rows inside the image written by the producer, the rest
// filled), the projection accumulating the blocks onto the output strip (the residual loaded into
// it first). No intermediate is loaded or stored. Without the pass every layer is its own nest.

builtin.module attributes {nn.weights = "in.weights.npz"} {
  func.func @main(%x: tensor<1x8x8x8xf32>) -> tensor<1x8x4x4xf32> {
    %w1 = nn.weight "w1" : tensor<32x8x1x1xf32>
    %b1 = nn.weight "b1" : tensor<32xf32>
    %wd = nn.weight "wd" : tensor<32x1x3x3xf32>
    %bd = nn.weight "bd" : tensor<32xf32>
    %w2 = nn.weight "w2" : tensor<8x32x1x1xf32>
    %b2 = nn.weight "b2" : tensor<8xf32>
    %a = nn.weight "a" : tensor<16x8x1x1xf32>
    %v = nn.weight "v" : tensor<16x1x3x1xf32>
    %h = nn.weight "h" : tensor<16x1x1x3xf32>
    %o = nn.weight "o" : tensor<8x16x1x1xf32>
    %ob = nn.weight "ob" : tensor<8xf32>
    %e = fused.conv2d %x, %w1, %b1 strides [1, 1] pads [0, 0, 0, 0] dilations [1, 1] group 1 act clip min 0.000000e+00 max 6.000000e+00 {onnx_nodes = ["expand"]} : (tensor<1x8x8x8xf32>, tensor<32x8x1x1xf32>, tensor<32xf32>) -> tensor<1x32x8x8xf32>
    %d = fused.conv2d %e, %wd, %bd strides [1, 1] pads [1, 1, 1, 1] dilations [1, 1] group 32 act clip min 0.000000e+00 max 6.000000e+00 {onnx_nodes = ["dw"]} : (tensor<1x32x8x8xf32>, tensor<32x1x3x3xf32>, tensor<32xf32>) -> tensor<1x32x8x8xf32>
    %y = fused.conv2d %d, %w2, %b2 residual %x strides [1, 1] pads [0, 0, 0, 0] dilations [1, 1] group 1 act none {onnx_nodes = ["project", "add"]} : (tensor<1x32x8x8xf32>, tensor<8x32x1x1xf32>, tensor<8xf32>) -> tensor<1x8x8x8xf32>
    %c1 = fused.conv2d %y, %a strides [1, 1] pads [0, 0, 0, 0] dilations [1, 1] group 1 act none {onnx_nodes = ["cp.in"]} : (tensor<1x8x8x8xf32>, tensor<16x8x1x1xf32>) -> tensor<1x16x8x8xf32>
    %c2 = fused.conv2d %c1, %v strides [2, 1] pads [1, 0, 1, 0] dilations [1, 1] group 16 act none {onnx_nodes = ["cp.vertical"]} : (tensor<1x16x8x8xf32>, tensor<16x1x3x1xf32>) -> tensor<1x16x4x8xf32>
    %c3 = fused.conv2d %c2, %h strides [1, 2] pads [0, 1, 0, 1] dilations [1, 1] group 16 act none {onnx_nodes = ["cp.horizontal"]} : (tensor<1x16x4x8xf32>, tensor<16x1x1x3xf32>) -> tensor<1x16x4x4xf32>
    %z = fused.conv2d %c3, %o, %ob strides [1, 1] pads [0, 0, 0, 0] dilations [1, 1] group 1 act relu {onnx_nodes = ["cp.out"]} : (tensor<1x16x4x4xf32>, tensor<8x16x1x1xf32>, tensor<8xf32>) -> tensor<1x8x4x4xf32>
    func.return %z : tensor<1x8x4x4xf32>
  }
}

// CHECK:      %y = tile.nest "e+d+y" (%x, %w1, %b1, %wd, %bd, %w2, %b2, %x) -> tensor<1x8x8x8xf32> attributes {op = "fused.group", onnx_nodes = ["expand", "dw", "project", "add"], halo = "recompute", fusion = {cycles = [{{[0-9]+}} : i64, {{[0-9]+}} : i64], dram_bytes = [{{[0-9]+}} : i64, {{[0-9]+}} : i64]}} {
// CHECK:        %in = tile.buffer "input" slots 1 : memref<{{[0-9]+}}x8x8xf32, "BUF">
// CHECK:        %m1 = tile.buffer "intermediate" slots 1 : memref<{{[0-9]+}}x10x[[TCB:[0-9]+]]xf32, "BUF">
// CHECK:        %m2 = tile.buffer "intermediate" slots 1 : memref<{{[0-9]+}}x8x[[TCB]]xf32, "BUF">
// CHECK:        %out = tile.buffer "output" slots 1 : memref<{{[0-9]+}}x8x8xf32, "BUF">
// CHECK-NEXT:   tile.for %n[%tn] = 0 to 1 step 1, %oh[%toh] = 0 to 8 step {{[0-9]+}} cores 1 order naive {
// CHECK-NEXT:     %top = tile.max [%oh - 1, 0]
// CHECK-NEXT:     %bottom = tile.min [%oh + %toh + 1, 8]
// CHECK-NEXT:     tile.load %X[%n, 0, %top, 0] [1, 8, %bottom - %top, 8] -> %in[0] dims [2, 3, 1]
// CHECK-NEXT:     tile.load %R[%n, 0, %oh, 0] [1, 8, %toh, 8] -> %out[0] dims [2, 3, 1]
// CHECK-NEXT:     tile.for %cb[%tcb] = 0 to 32 step [[TCB]] order serpentine {
// CHECK-NOT:        tile.store
// CHECK:            tile.conv %in[0], %w1b[0] -> %m1[%top * {{[0-9]+}} - %oh * {{[0-9]+}} + {{[0-9]+}}] sizes [%bottom - %top, 8, 8, [[TCB]]] pitch [{{[0-9]+}}] kernel [1, 1] strides [1, 1] dilations [1, 1] bias %w1b[{{[0-9]+}}] act clip [0.0, 6.0]
// CHECK-NEXT:       tile.fill %m1[0] sizes [%top - %oh + 1, 10, [[TCB]]] value 0.0
// CHECK-NEXT:       tile.fill %m1[{{.*}}] sizes [%oh + %toh - %bottom + 1, 10, [[TCB]]] value 0.0
// CHECK-NEXT:       tile.fill %m1[0] sizes [%toh + 2, 1, [[TCB]]] pitch {{[0-9]+}} value 0.0
// CHECK-NEXT:       tile.fill %m1[{{[0-9]+}}] sizes [%toh + 2, 1, [[TCB]]] pitch {{[0-9]+}} value 0.0
// CHECK-NEXT:       tile.depthwise %m1[0], %wdb[0] -> %m2[0] sizes [%toh, 8, [[TCB]]] pitch [{{[0-9]+}}, [[TCB]]] kernel [3, 3] strides [1, 1] dilations [1, 1] bias %wdb[{{[0-9]+}}] act clip [0.0, 6.0]
// CHECK-NEXT:       tile.conv %m2[0], %w2b[0] -> %out[0] sizes [%toh, 8, [[TCB]], 8] kernel [1, 1] strides [1, 1] dilations [1, 1] reduce %cb onto_output bias %w2b[{{[0-9]+}}]
// CHECK-NEXT:     }
// CHECK-NEXT:     tile.store %out[0] -> %Y[%n, 0, %oh, 0] [1, 8, %toh, 8] dims [2, 3, 1]

// CHECK:      %z = tile.nest "c1+c2+c3+z" (%y, %a, %v, %h, %o, %ob) -> tensor<1x8x4x4xf32> attributes {op = "fused.group", onnx_nodes = ["cp.in", "cp.vertical", "cp.horizontal", "cp.out"]
// CHECK:          %top2 = tile.max [%oh_1, 0]
// CHECK-NEXT:     %bottom2 = tile.min [%oh_1 + %toh_1, 4]
// CHECK-NEXT:     %top1 = tile.max [%top2 * 2 - 1, 0]
// CHECK-NEXT:     %bottom1 = tile.min [%bottom2 * 2, 8]
// CHECK-NEXT:     tile.load %X_1[%n_1, 0, %top1, 0] [1, 8, %bottom1 - %top1, 8] -> %in_1[0] dims [2, 3, 1]
// CHECK:            tile.depthwise %m1_1[0], %wd1b[0] -> %m2_1[{{.*}}] sizes [%bottom2 - %top2, 8, {{[0-9]+}}] pitch [{{[0-9]+}}, {{[0-9]+}}, {{[0-9]+}}] kernel [3, 1] strides [2, 1] dilations [1, 1]
// CHECK:            tile.depthwise %m2_1[0], %wd2b[0] -> %m3[0] sizes [%toh_1, 4, {{[0-9]+}}] pitch [{{[0-9]+}}, {{[0-9]+}}] kernel [1, 3] strides [1, 2] dilations [1, 1]
// CHECK-NEXT:       tile.conv %m3[0], %w2b_1[0] -> %out_1[0] sizes [%toh_1, 4, {{[0-9]+}}, 8] kernel [1, 1] strides [1, 1] dilations [1, 1] reduce %cb_1 bias %w2b_1[128] act relu

// LAYERS-COUNT-7: tile.nest
// LAYERS-NOT:     fused.group
