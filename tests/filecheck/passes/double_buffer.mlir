// RUN: nncc-opt %s -p double-buffer | filecheck %s
// RUN: sed 's/size_bytes = 65536/size_bytes = 3072/' %s | not nncc-opt -p double-buffer 2>&1 | filecheck %s --check-prefix=FIT
// double-buffer gives every buffer of the loop nests a second slot (DMA of the next tile then
// overlaps the compute of this one) and records tile.buffers = 2 for the layers that are not
// nests yet; a resident buffer (data every job reads, loaded once) keeps its one slot. Buffers
// that fit once but not twice are refused by the verifier after the pass.

// CHECK:      builtin.module attributes {tile.target = {{.*}}, tile.buffers = 2 : i64} {
// CHECK:        %in = tile.buffer "input" slots 2 : memref<3x8x8xf32, "BUF">
// CHECK-NEXT:   %wt = tile.buffer "weight" slots 2 shared : memref<8x8xf32, "BUF">
// CHECK-NEXT:   %out = tile.buffer "output" slots 2 : memref<3x8x8xf32, "BUF">
// CHECK-NEXT:   %res = tile.buffer "weight" slots 1 shared resident : memref<8xf32, "BUF">

// FIT: nncc-opt: error: IR verification failed after pass double-buffer: tile.nest pw: buffer %out (2 x 768 bytes) does not fit in memory BUF: the nest's buffers there need 3584 bytes, it has 3072

builtin.module attributes {tile.target = {name = "edge", memory = [{name = "BUF", size_bytes = 65536 : i64}]}} {
  func.func @main(%x: tensor<1x8x6x8xf32>, %w: tensor<8x8x1x1xf32>) -> tensor<1x8x6x8xf32> {
    %y = tile.nest "pw" (%x, %w) -> tensor<1x8x6x8xf32> attributes {op = "nn.conv2d"} {
    ^bb0(%X: tensor<1x8x6x8xf32>, %W: tensor<8x8x1x1xf32>, %Y: tensor<1x8x6x8xf32>):
      %Wv = tile.relayout %W shape [1, 8, 8, 1, 1] permutation [0, 3, 4, 2, 1] : tensor<8x8x1x1xf32> -> tensor<1x1x1x8x8xf32>
      %in = tile.buffer "input" slots 1 : memref<3x8x8xf32, "BUF">
      %wt = tile.buffer "weight" slots 1 shared : memref<8x8xf32, "BUF">
      %out = tile.buffer "output" slots 1 : memref<3x8x8xf32, "BUF">
      %res = tile.buffer "weight" slots 1 shared resident : memref<8xf32, "BUF">
      tile.for %oh[%toh] = 0 to 6 step 3 cores 1 order naive {
        tile.load %X[0, 0, %oh, 0] [1, 8, %toh, 8] -> %in[0] dims [2, 3, 1]
        tile.load %Wv[0, 0, 0, 0, 0] [1, 1, 1, 8, 8] -> %wt[0] dims [3, 4]
        tile.conv %in[0], %wt[0] -> %out[0] sizes [%toh, 8, 8, 8] kernel [1, 1] strides [1, 1] dilations [1, 1]
        tile.store %out[0] -> %Y[0, 0, %oh, 0] [1, 8, %toh, 8] dims [2, 3, 1]
      }
    } : (tensor<1x8x6x8xf32>, tensor<8x8x1x1xf32>) -> tensor<1x8x6x8xf32>
    func.return %y : tensor<1x8x6x8xf32>
  }
}
