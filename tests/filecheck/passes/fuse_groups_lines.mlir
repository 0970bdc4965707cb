// RUN: rm -rf %t && mkdir -p %t && cp %s %t/in.mlir
// RUN: python -c "import numpy as np; r = np.random.default_rng(0); f = lambda *s: r.standard_normal(s).astype('f4'); np.savez('%t/in.weights.npz', w1=f(8, 3, 3, 3), b1=f(8), w2=f(8, 8, 3, 3), b2=f(8), w3=f(16, 8, 3, 3), b3=f(16))"
// RUN: nncc-opt %t/in.mlir -p 'partition-cores{target=edge target-set="memory.BUF.size_bytes=16384"},fuse-groups{always=true tile-objective=dram},tile-layers,double-buffer' -o %t/m.tile.mlir
// RUN: filecheck %s --input-file %t/m.tile.mlir
// RUN: nncc-opt %t/m.tile.mlir | nncc-opt | filecheck %s
// RUN: nncc-opt %t/m.tile.mlir -p lower-to-isa | filecheck %s --check-prefix=ISA
// RUN: sed 's/"intermediate" slots 1 ring : memref<4x14x8xf32/"intermediate" slots 1 : memref<4x14x8xf32/' %t/m.tile.mlir | not nncc-opt 2>&1 | filecheck %s --check-prefix=NORING
// Line buffers in a fused chain (VGG's conv1_1, conv1_2, pool1, conv2_1 in small) on `edge` with
// 16 KiB of buffer, tiled for the fewest DRAM bytes: the cost model caches every halo. The last
// conv's output rows are walked one by one down a band of whole rows (`%oh` from -2: two strips
// above the image fill the line buffers), and every window that shares rows with the strip
// before is a one-slot `ring` (`halo = "cache"`): the input (4 rows), conv2's input %m1 (4 rows)
// and conv3's input %m3 (3 rows); the pool's input %m2 shares none (2 x 2 windows, stride 2).
// Each strip first moves the rows a ring keeps to its top (`tile.copy`: 2 rows of %m1 and of
// %m3; none at the band's first strip), then each layer computes only the new rows of the window
// after it that lie inside the image (`%lo1` .. `%hi1`: two rows of %m1, one of %m3), and the
// rows outside it and the padding columns are filled with zeros; the output row is stored once
// it is inside the image (`%row` .. `%end`). Lowered, the kept rows are on-chip copies (BUF ->
// BUF DMAs of 224 and 96 values) and the input's new rows the only DRAM reads besides the
// weights: 9,696 bytes of DRAM traffic, the compulsory, against 18,912 layer by layer. The IR
// prints and parses back the same; a copy inside a buffer that is not a ring is refused.

// CHECK:      %c3 = tile.nest "c1+c2+p+c3" (%x, %w1, %b1, %w2, %b2, %w3, %b3) -> tensor<1x16x4x4xf32> attributes {op = "fused.group", onnx_nodes = ["conv1", "conv2", "pool", "conv3"], halo = "cache", fusion = {cycles = [{{[0-9]+}} : i64, {{[0-9]+}} : i64], dram_bytes = [9696 : i64, 18912 : i64]}} {
// CHECK:        %in = tile.buffer "input" slots 1 ring : memref<4x16x3xf32, "BUF">
// CHECK-NEXT:   %wt1 = tile.buffer "weight" slots 1 shared resident : memref<224xf32, "BUF">
// CHECK-NEXT:   %m1 = tile.buffer "intermediate" slots 1 ring : memref<4x14x8xf32, "BUF">
// CHECK-NEXT:   %wt2 = tile.buffer "weight" slots 1 shared resident : memref<584xf32, "BUF">
// CHECK-NEXT:   %m2 = tile.buffer "intermediate" slots 2 : memref<2x12x8xf32, "BUF">
// CHECK-NEXT:   %m3 = tile.buffer "intermediate" slots 1 ring : memref<3x6x8xf32, "BUF">
// CHECK-NEXT:   %wt3 = tile.buffer "weight" slots 1 shared resident : memref<1168xf32, "BUF">
// CHECK-NEXT:   %out = tile.buffer "output" slots 2 : memref<1x4x16xf32, "BUF">
// CHECK-NEXT:   tile.for %n[%tn] = 0 to 1 step 1, %ow[%tow] = 0 to 4 step 4 cores 1 order naive {
// CHECK-COUNT-4:  tile.{{max|min}}
// CHECK-NEXT:     tile.for %oh[%toh] = -2 to 4 step 1 order naive {
// CHECK-NEXT:       %kept1 = tile.min [%oh * 2 + 4, 2]
// CHECK-NEXT:       tile.copy %m1[224] -> %m1[0] sizes [%kept1 * 112]
// CHECK-NEXT:       %kept3 = tile.min [%oh * 2 + 4, 2]
// CHECK-NEXT:       tile.copy %m3[48] -> %m3[0] sizes [%kept3 * 48]
// CHECK-NEXT:       tile.load %X[%n, 0, %oh * 2 + 2, %ow * 2 - 4] [1, 3, 4, 16] -> %in[0] dims [2, 3, 1]
// CHECK:            %row = tile.max [%oh, 0]
// CHECK-NEXT:       %end = tile.max [%oh + %toh, 0]
// CHECK-NEXT:       %top1 = tile.max [%oh * 2 + 3, 0]
// CHECK-NEXT:       %lo1 = tile.min [%top1, %oh * 2 + 5]
// CHECK-NEXT:       %bottom1 = tile.min [%oh * 2 + 5, 8]
// CHECK-NEXT:       %hi1 = tile.max [%bottom1, %lo1]
// CHECK-NEXT:       tile.conv %in[%lo1 * 48 - %oh * 96 - 144], %wt1[0] -> %m1[%lo1 * 112 - %oh * 224 - 112] sizes [%hi1 - %lo1, 14, 3, 8] kernel [3, 3] strides [1, 1] dilations [1, 1] bias %wt1[216] act relu
// CHECK-NEXT:       %up1 = tile.max [%oh * (-2) - 1, 0]
// CHECK-NEXT:       %above1 = tile.min [%up1, 4]
// CHECK-NEXT:       tile.fill %m1[0] sizes [%above1, 14, 8] value 0.0
// CHECK-NEXT:       tile.fill %m1[%hi1 * 112 - %oh * 224 - 112] sizes [%oh * 2 - %hi1 + 5, 14, 8] value 0.0
// CHECK-COUNT-2:    tile.fill %m1[%lo1 * 112
// CHECK:            tile.conv %m1[%lo2 * 112 - %oh * 224 - 224], %wt2[0] -> %m2[%lo2 * 96 - %oh * 192 - 192] sizes [%hi2 - %lo2, 12, 8, 8]
// CHECK:            tile.pool max %m2[%lo3 * 192 - %oh * 192 - 192] -> %m3[%lo3 * 48 - %oh * 48 + 48] sizes [%hi3 - %lo3, 6, 8] kernel [2, 2] strides [2, 2] dilations [1, 1]
// CHECK:            tile.conv %m3[%row * 48 - %oh * 48], %wt3[0] -> %out[0] sizes [%end - %row, 4, 8, 16]
// CHECK-NEXT:       tile.store %out[0] -> %Y[%n, 0, %row, %ow] [1, 16, %end - %row, 4] dims [2, 3, 1]
// CHECK-NEXT:     }
// CHECK-NEXT:   }

// ISA:     isa.layer {{.*}}name = "c1+c2+p+c3"{{.*}}op = "fused.group"
// ISA:     isa.dma {{.*}}src_mem = "BUF", src_addr = 2560 : i64, {{.*}}dst_mem = "BUF", dst_addr = 1664 : i64, {{.*}}shape = array<i64: 1, 1, 224>
// ISA:     isa.dma {{.*}}src_mem = "BUF", src_addr = 7552 : i64, {{.*}}dst_mem = "BUF", dst_addr = 7360 : i64, {{.*}}shape = array<i64: 1, 1, 96>
// ISA-NOT: isa.layer

// NORING: tile.copy: copies inside a ring buffer only (a line buffer's kept rows)

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
