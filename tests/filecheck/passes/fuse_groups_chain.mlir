// RUN: rm -rf %t && mkdir -p %t && cp %s %t/in.mlir
// RUN: python -c "import numpy as np; r = np.random.default_rng(0); f = lambda *s: r.standard_normal(s).astype('f4'); np.savez('%t/in.weights.npz', w1=f(8, 3, 3, 3), b1=f(8), w2=f(8, 8, 3, 3), b2=f(8), w3=f(16, 8, 3, 3), b3=f(16))"
// RUN: nncc-opt %t/in.mlir -p 'partition-cores{target=fusion},fuse-groups{always=true}' | filecheck %s
// RUN: nncc-opt %t/in.mlir -p 'partition-cores{target=fusion},fuse-groups{always=true},tile-layers,double-buffer,lower-to-isa' | filecheck %s --check-prefix=ISA
// RUN: nncc-opt %t/in.mlir -p 'partition-cores{target=edge},tile-layers' | filecheck %s --check-prefix=LAYERS
// fuse-groups writes a chain of full convs and a max pool (VGG's conv1_1, conv1_2, pool1, conv2_1
// in small: the fused-layer schedule of Alwani et al.) as one nest: 2-D tiles of the last conv's
// output, the first conv's input window with every layer's halo in both dimensions (its padding
// as slice bounds), each layer computed over the whole window its consumer reads (halo rows and
// columns recomputed: halo = "recompute", the fastest on `fusion` here; line buffers instead:
// fuse_groups_lines.mlir), the rows and columns outside the image then filled
// with the consumer's padding. Every conv's weights are one resident buffer (one slot, whatever
// double-buffer says) loaded with the same slice by every tile: read from DRAM once (the last
// conv's, the tail, may come in blocks of output channels instead: not here). Only the input,
// the weights and the output move; without the pass every layer is its own nest.

builtin.module attributes {nn.weights = "in.weights.npz"} {
  func.func @main(%x: tensor<1x3x8x8xf32>) -> tensor<1x16x4x4xf32> {
    %w1 = nn.weight "w1" : tensor<8x3x3x3xf32>
    %b1 = nn.weight "b1" : tensor<8xf32>
    %w2 = nn.weight "w2" : tensor<8x8x3x3xf32>
    %b2 = nn.weight "b2" : tensor<8xf32>
    %w3 = nn.weight "w3" : tensor<16x8x3x3xf32>
    %b3 = nn.weight "b3" : tensor<16xf32>
    %c1 = fused.conv2d %x, %w1, %b1 strides [1, 1] pads [1, 1, 1, 1] dilations [1, 1] group 1 act relu {onnx_nodes = ["conv1"]} : (tensor<1x3x8x8xf32>, tensor<8x3x3x3xf32>, tensor<8xf32>) -> tensor<1x8x8x8xf32>
    %c2 = fused.conv2d %c1, %w2, %b2 strides [1, 1] pads [1, 1, 1, 1] dilations [1, 1] group 1 act relu {onnx_nodes = ["conv2"]} : (tensor<1x8x8x8xf32>, tensor<8x8x3x3xf32>, tensor<8xf32>) -> tensor<1x8x8x8xf32>
    %p = nn.max_pool %c2 kernel [2, 2] strides [2, 2] pads [0, 0, 0, 0] dilations [1, 1] ceil_mode false {onnx_nodes = ["pool"]} : (tensor<1x8x8x8xf32>) -> tensor<1x8x4x4xf32>
    %c3 = fused.conv2d %p, %w3, %b3 strides [1, 1] pads [1, 1, 1, 1] dilations [1, 1] group 1 act relu {onnx_nodes = ["conv3"]} : (tensor<1x8x4x4xf32>, tensor<16x8x3x3xf32>, tensor<16xf32>) -> tensor<1x16x4x4xf32>
    func.return %c3 : tensor<1x16x4x4xf32>
  }
}

// CHECK:      %c3 = tile.nest "c1+c2+p+c3" (%x, %w1, %b1, %w2, %b2, %w3, %b3) -> tensor<1x16x4x4xf32> attributes {op = "fused.group", onnx_nodes = ["conv1", "conv2", "pool", "conv3"], halo = "recompute", fusion = {cycles = [{{[0-9]+}} : i64, {{[0-9]+}} : i64], dram_bytes = [{{[0-9]+}} : i64, {{[0-9]+}} : i64]}} {
// CHECK:        %W1p = tile.relayout %W1 shape [1, 8, 3, 3, 3] permutation [0, 3, 4, 2, 1]
// CHECK:        %in = tile.buffer "input" slots 1 : memref<[[R0:[0-9]+]]x[[C0:[0-9]+]]x3xf32, "IBUF">
// CHECK-NEXT:   %wt1 = tile.buffer "weight" slots 1 shared resident : memref<224xf32, "WBUF">
// CHECK-NEXT:   %m1 = tile.buffer "intermediate" slots 1 : memref<{{[0-9]+}}x[[C1:[0-9]+]]x8xf32, "IBUF">
// CHECK-NEXT:   %wt2 = tile.buffer "weight" slots 1 shared resident : memref<584xf32, "WBUF">
// CHECK-NEXT:   %m2 = tile.buffer "intermediate" slots 1 : memref<{{[0-9]+}}x[[C2:[0-9]+]]x8xf32, "OBUF">
// CHECK-NEXT:   %m3 = tile.buffer "intermediate" slots 1 : memref<{{[0-9]+}}x[[C3:[0-9]+]]x8xf32, "IBUF">
// CHECK-NEXT:   %wt3 = tile.buffer "weight" slots 1 shared resident : memref<1168xf32, "WBUF">
// CHECK-NEXT:   %out = tile.buffer "output" slots 1 : memref<{{[0-9]+}}x[[TOW:[0-9]+]]x16xf32, "OBUF">
// CHECK-NEXT:   tile.for %n[%tn] = 0 to 1 step 1, %oh[%toh] = 0 to 4 step {{[0-9]+}}, %ow[%tow] = 0 to 4 step [[TOW]] cores 1 order naive {
// CHECK-NEXT:     %row_low3 = tile.max [%oh - 1, 0]
// CHECK-NEXT:     %row_high3 = tile.min [%oh + %toh + 1, 4]
// CHECK-NEXT:     %col_low3 = tile.max [%ow - 1, 0]
// CHECK-NEXT:     %col_high3 = tile.min [%ow + {{[0-9]+}}, 4]
// CHECK-NEXT:     %row_low1 = tile.max [%oh * 2 - 3, 0]
// CHECK-NEXT:     %row_high1 = tile.min [%oh * 2 + %toh * 2 + 3, 8]
// CHECK-NEXT:     %col_low1 = tile.max [%ow * 2 - 3, 0]
// CHECK-NEXT:     %col_high1 = tile.min [%ow * 2 + {{[0-9]+}}, 8]
// CHECK-NEXT:     tile.load %X[%n, 0, %oh * 2 - 4, %ow * 2 - 4] [1, 3, %toh * 2 + 8, [[C0]]] -> %in[0] dims [2, 3, 1]
// CHECK-NEXT:     tile.load %W1p[0, 0, 0, 0, 0] [1, 3, 3, 3, 8] -> %wt1[0] dims [1, 2, 3, 4]
// CHECK-NEXT:     tile.load %B1[0] [8] -> %wt1[216] dims [0]
// CHECK-NEXT:     tile.load %W2p[0, 0, 0, 0, 0] [1, 3, 3, 8, 8] -> %wt2[0] dims [1, 2, 3, 4]
// CHECK-NEXT:     tile.load %B2[0] [8] -> %wt2[576] dims [0]
// CHECK-NOT:      tile.store
// CHECK-NEXT:     tile.conv %in[0], %wt1[0] -> %m1[0] sizes [%toh * 2 + 6, [[C1]], 3, 8] kernel [3, 3] strides [1, 1] dilations [1, 1] bias %wt1[216] act relu
// CHECK-NEXT:     tile.fill %m1[0] sizes [%row_low1 - %oh * 2 + 3, [[C1]], 8] value 0.0
// CHECK-NEXT:     tile.fill %m1[{{.*}}] sizes [%oh * 2 + %toh * 2 - %row_high1 + 3, [[C1]], 8] value 0.0
// CHECK-NEXT:     tile.fill %m1[0] sizes [%toh * 2 + 6, %col_low1 - %ow * 2 + 3, 8] pitch {{[0-9]+}} value 0.0
// CHECK-NEXT:     tile.fill %m1[{{.*}}] sizes [%toh * 2 + 6, %ow * 2 - %col_high1 + {{[0-9]+}}, 8] pitch {{[0-9]+}} value 0.0
// CHECK-NEXT:     tile.conv %m1[0], %wt2[0] -> %m2[0] sizes [%toh * 2 + 4, [[C2]], 8, 8] kernel [3, 3] strides [1, 1] dilations [1, 1] bias %wt2[576] act relu
// CHECK-NEXT:     tile.pool max %m2[0] -> %m3[0] sizes [%toh + 2, [[C3]], 8] kernel [2, 2] strides [2, 2] dilations [1, 1]
// CHECK-NEXT:     tile.fill %m3[0] sizes [%row_low3 - %oh + 1, [[C3]], 8] value 0.0
// CHECK-COUNT-3:  tile.fill %m3
// CHECK-NEXT:     tile.load %W3p[0, 0, 0, 0, 0] [1, 3, 3, 8, 16] -> %wt3[0] dims [1, 2, 3, 4]
// CHECK-NEXT:     tile.load %B3[0] [16] -> %wt3[1152] dims [0]
// CHECK-NEXT:     tile.conv %m3[0], %wt3[0] -> %out[0] sizes [%toh, [[TOW]], 8, 16] kernel [3, 3] strides [1, 1] dilations [1, 1] bias %wt3[1152] act relu
// CHECK-NEXT:     tile.store %out[0] -> %Y[%n, 0, %oh, %ow] [1, 16, %toh, [[TOW]]] dims [2, 3, 1]
// CHECK-NEXT:   }

// ISA:          isa.layer {{.*}}name = "c1+c2+p+c3"{{.*}}op = "fused.group"
// ISA-NOT:      isa.layer

// LAYERS-COUNT-4: tile.nest
// LAYERS-NOT:     fused.group
