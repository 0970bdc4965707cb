// RUN: rm -rf %t && mkdir -p %t && cp %s %t/in.mlir
// RUN: python -c "import numpy as np; np.savez('%t/in.weights.npz', w=np.ones((8, 8, 3, 3), np.float32))"
// RUN: nncc-opt %t/in.mlir -p 'partition-cores{target=edge target-set="memory.BUF.size_bytes=8192"},tile-layers{tile-objective=dram},double-buffer' -o %t/m.tile.mlir
// RUN: filecheck %s --input-file %t/m.tile.mlir
// RUN: nncc-opt %t/m.tile.mlir | nncc-opt | filecheck %s
// RUN: nncc-opt %t/m.tile.mlir -p lower-to-isa -o %t/m.isa.mlir
// RUN: filecheck %s --input-file %t/m.isa.mlir --check-prefix=ISA
// RUN: sed 's/ shared ring / shared /' %t/m.tile.mlir | not nncc-opt 2>&1 | filecheck %s --check-prefix=NORING
// RUN: sed 's/slots 1 shared ring/slots 2 shared ring/' %t/m.tile.mlir | not nncc-opt 2>&1 | filecheck %s --check-prefix=SLOTS
// A 3x3 conv whose input does not fit the buffer (8 KiB here), tiled for the fewest DRAM bytes:
// the cost model caches the halo. Strips of 3 whole output rows walk down the image, every
// output-channel tile of a strip inside (the strip's input shared by them), the input window a
// `ring` buffer of one slot (double-buffer leaves it at one) and the nest says `halo = "cache"`.
// Lowered, each strip after the first copies the 2 rows it shares with the strip before on chip
// (a BUF -> BUF DMA of 2 x 10 x 8 values from row 3 of the window to row 0) and reads only its new
// rows from DRAM: rows -1..3 (the top one padding), then 4..6, then 7 and the bottom padding row,
// so each input row crosses the DRAM bus once. The IR prints and parses back the same; a nest
// that says it caches without a ring buffer, or a ring of two slots, is refused by the verifier.

// CHECK:      %y = tile.nest "y" (%x, %w) -> tensor<1x8x8x8xf32> attributes {op = "nn.conv2d", onnx_nodes = ["conv"], halo = "cache"} {
// CHECK:        %in = tile.buffer "input" slots 1 shared ring : memref<5x10x8xf32, "BUF">
// CHECK-NEXT:   %wt = tile.buffer "weight" slots 2 : memref<584xf32, "BUF">
// CHECK-NEXT:   %out = tile.buffer "output" slots 2 : memref<3x8x8xf32, "BUF">
// CHECK-NEXT:   tile.for %n[%tn] = 0 to 1 step 1, %oh[%toh] = 0 to 8 step 3, %ow[%tow] = 0 to 8 step 8 order naive {
// CHECK-NEXT:     tile.for %oc[%toc] = 0 to 8 step 8 cores 1 order serpentine {
// CHECK-NEXT:       tile.for %ic[%tic] = 0 to 8 step 8 order serpentine {
// CHECK-NEXT:         tile.load %X[%n, %ic, %oh - 1, %ow - 1] [1, %tic, %toh + 2, %tow + 2] -> %in[0] dims [2, 3, 1]

// ISA:      isa.dma {ch = 0 : i64, src_mem = "DRAM", src_addr = 0 : i64, {{.*}} dst_mem = "BUF", dst_addr = 0 : i64, {{.*}} shape = array<i64: 5, 10, 8>, pad = array<i64: 1, 0, 1, 1, 0, 0>
// ISA:      isa.matmul
// ISA:      isa.dma {ch = 0 : i64, src_mem = "BUF", src_addr = 960 : i64, {{.*}} dst_mem = "BUF", dst_addr = 0 : i64, {{.*}} shape = array<i64: 1, 1, 160>
// ISA-NEXT: isa.dma {ch = 0 : i64, src_mem = "DRAM", src_addr = 128 : i64, {{.*}} dst_mem = "BUF", dst_addr = 640 : i64, {{.*}} shape = array<i64: 3, 10, 8>, pad = array<i64: 0, 0, 1, 1, 0, 0>
// ISA:      isa.dma {ch = 0 : i64, src_mem = "BUF", src_addr = 960 : i64, {{.*}} dst_mem = "BUF", dst_addr = 0 : i64, {{.*}} shape = array<i64: 1, 1, 160>
// ISA-NEXT: isa.dma {ch = 0 : i64, src_mem = "DRAM", src_addr = 224 : i64, {{.*}} dst_mem = "BUF", dst_addr = 640 : i64, {{.*}} shape = array<i64: 2, 10, 8>, pad = array<i64: 0, 1, 1, 1, 0, 0>
// ISA-NOT:  src_mem = "DRAM", src_addr = {{[0-9]+}} : i64, src_core = 0 : i64, src_stride = array<i64: 8, 1, 64>

// NORING: tile.nest y: halo = "cache" goes with a ring buffer (the cached halo rows), and only with one
// SLOTS:  tile.buffer: a ring buffer is an input or intermediate buffer of 1 slot, not resident

builtin.module attributes {nn.weights = "in.weights.npz"} {
  func.func @main(%x: tensor<1x8x8x8xf32>) -> tensor<1x8x8x8xf32> {
    %w = nn.weight "w" : tensor<8x8x3x3xf32>
    %y = nn.conv2d %x, %w strides [1, 1] pads [1, 1, 1, 1] dilations [1, 1] group 1 {onnx_nodes = ["conv"]} : (tensor<1x8x8x8xf32>, tensor<8x8x3x3xf32>) -> tensor<1x8x8x8xf32>
    func.return %y : tensor<1x8x8x8xf32>
  }
}
