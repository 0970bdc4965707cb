// RUN: nncc-opt %s | nncc-opt | filecheck %s
// RUN: xdsl-opt %s --print-op-generic | nncc-opt | filecheck %s
// RUN: sed 's/memref<4x58x48xf32, "BUF">/memref<40x58x48xf32, "BUF">/' %s | not nncc-opt 2>&1 | filecheck %s --check-prefix=FIT
// RUN: sed 's/size_bytes = 262144 : i64}\]}}/size_bytes = 262144 : i64, shared = true}]}, tile.cores = 2 : i64}/' %s | not nncc-opt 2>&1 | filecheck %s --check-prefix=CORES
// A fused group as one nest prints in the tile dialect's custom form and parses back to the same
// IR, also from the generic form. A buffer that does not fit its memory is a verifier error
// naming the buffer and the memory (the module records the target). In a memory with one
// instance for all cores (`shared = true`), every core has its own copy of the buffers the cores
// do not share: with two cores the same nest no longer fits.

builtin.module attributes {tile.target = {name = "edge", memory = [{name = "BUF", size_bytes = 262144 : i64}]}} {
  func.func @main(%x: tensor<1x24x56x56xf32>) -> tensor<1x24x56x56xf32> {
    %w1 = nn.weight "w1" : tensor<144x24x1x1xf32>
    %b1 = nn.weight "b1" : tensor<144xf32>
    %wd = nn.weight "wd" : tensor<144x1x3x3xf32>
    %y = tile.nest "block" (%x, %w1, %b1, %wd) -> tensor<1x24x56x56xf32> attributes {op = "fused.group"} {
    ^bb0(%X: tensor<1x24x56x56xf32>, %W1: tensor<144x24x1x1xf32>, %B1: tensor<144xf32>, %WD: tensor<144x1x3x3xf32>, %Y: tensor<1x24x56x56xf32>):
      %W1p = tile.relayout %W1 shape [1, 144, 24, 1, 1] permutation [0, 3, 4, 2, 1] : tensor<144x24x1x1xf32> -> tensor<1x1x1x24x144xf32>
      %WDp = tile.relayout %WD shape [144, 9] permutation [1, 0] : tensor<144x1x3x3xf32> -> tensor<9x144xf32>
      %in = tile.buffer "input" slots 2 : memref<4x56x24xf32, "BUF">
      %w1b = tile.buffer "weight" slots 2 shared : memref<1200xf32, "BUF">
      %wdb = tile.buffer "weight" slots 1 shared : memref<480xf32, "BUF">
      %m1 = tile.buffer "intermediate" slots 2 : memref<4x58x48xf32, "BUF">
      %out = tile.buffer "output" slots 2 : memref<2x56x48xf32, "BUF">
      tile.for %oh[%toh] = 0 to 56 step 2 cores 1 order naive {
        %top = tile.max [%oh - 1, 0]
        %bottom = tile.min [%oh + %toh + 1, 56]
        tile.load %X[0, 0, %top, 0] [1, 24, %bottom - %top, 56] -> %in[0] dims [2, 3, 1] pad 0.0
        tile.for %cb[%tcb] = 0 to 48 step 48 order serpentine {
          tile.load %W1p[0, 0, 0, 0, %cb] [1, 1, 1, 24, %tcb] -> %w1b[0] dims [3, 4]
          tile.load %B1[%cb] [%tcb] -> %w1b[1152] dims [0]
          tile.load %WDp[0, %cb] [9, %tcb] -> %wdb[0] strides [48, 1] dims [0, 1]
          tile.fill %m1[0] sizes [%toh + 2, 58, 48] value 0.0
          tile.conv %in[0], %w1b[0] -> %m1[((%top - %oh + 1) * 58 + 1) * 48] sizes [%bottom - %top, 56, 24, 48] pitch [2784] kernel [1, 1] strides [1, 1] dilations [1, 1] bias %w1b[1152] act clip [0.0, 6.0]
          tile.depthwise %m1[0], %wdb[0] -> %out[0] sizes [%toh, 56, 48] pitch [2784, 48] kernel [3, 3] strides [1, 1] dilations [1, 1] act relu
        }
        tile.store %out[0] -> %Y[0, 0, %oh, 0] [1, 24, %toh, 56] dims [2, 3, 1]
      }
    } : (tensor<1x24x56x56xf32>, tensor<144x24x1x1xf32>, tensor<144xf32>, tensor<144x1x3x3xf32>) -> tensor<1x24x56x56xf32>
    func.return %y : tensor<1x24x56x56xf32>
  }
}

// CHECK:      %y = tile.nest "block" (%x, %w1, %b1, %wd) -> tensor<1x24x56x56xf32> attributes {op = "fused.group"} {
// CHECK-NEXT: ^bb0(%X: tensor<1x24x56x56xf32>, %W1: tensor<144x24x1x1xf32>, %B1: tensor<144xf32>, %WD: tensor<144x1x3x3xf32>, %Y: tensor<1x24x56x56xf32>):
// CHECK-NEXT:   %W1p = tile.relayout %W1 shape [1, 144, 24, 1, 1] permutation [0, 3, 4, 2, 1] : tensor<144x24x1x1xf32> -> tensor<1x1x1x24x144xf32>
// CHECK-NEXT:   %WDp = tile.relayout %WD shape [144, 9] permutation [1, 0] : tensor<144x1x3x3xf32> -> tensor<9x144xf32>
// CHECK-NEXT:   %in = tile.buffer "input" slots 2 : memref<4x56x24xf32, "BUF">
// CHECK-NEXT:   %w1b = tile.buffer "weight" slots 2 shared : memref<1200xf32, "BUF">
// CHECK-NEXT:   %wdb = tile.buffer "weight" slots 1 shared : memref<480xf32, "BUF">
// CHECK-NEXT:   %m1 = tile.buffer "intermediate" slots 2 : memref<4x58x48xf32, "BUF">
// CHECK-NEXT:   %out = tile.buffer "output" slots 2 : memref<2x56x48xf32, "BUF">
// CHECK-NEXT:   tile.for %oh[%toh] = 0 to 56 step 2 cores 1 order naive {
// CHECK-NEXT:     %top = tile.max [%oh - 1, 0]
// CHECK-NEXT:     %bottom = tile.min [%oh + %toh + 1, 56]
// CHECK-NEXT:     tile.load %X[0, 0, %top, 0] [1, 24, %bottom - %top, 56] -> %in[0] dims [2, 3, 1] pad 0.0
// CHECK-NEXT:     tile.for %cb[%tcb] = 0 to 48 step 48 order serpentine {
// CHECK-NEXT:       tile.load %W1p[0, 0, 0, 0, %cb] [1, 1, 1, 24, %tcb] -> %w1b[0] dims [3, 4]
// CHECK-NEXT:       tile.load %B1[%cb] [%tcb] -> %w1b[1152] dims [0]
// CHECK-NEXT:       tile.load %WDp[0, %cb] [9, %tcb] -> %wdb[0] strides [48, 1] dims [0, 1]
// CHECK-NEXT:       tile.fill %m1[0] sizes [%toh + 2, 58, 48] value 0.0
// CHECK-NEXT:       tile.conv %in[0], %w1b[0] -> %m1[%top * 2784 - %oh * 2784 + 2832] sizes [%bottom - %top, 56, 24, 48] pitch [2784] kernel [1, 1] strides [1, 1] dilations [1, 1] bias %w1b[1152] act clip [0.0, 6.0]
// CHECK-NEXT:       tile.depthwise %m1[0], %wdb[0] -> %out[0] sizes [%toh, 56, 48] pitch [2784, 48] kernel [3, 3] strides [1, 1] dilations [1, 1] act relu
// CHECK-NEXT:     }
// CHECK-NEXT:     tile.store %out[0] -> %Y[0, 0, %oh, 0] [1, 24, %toh, 56] dims [2, 3, 1]
// CHECK-NEXT:   }
// CHECK-NEXT: } : (tensor<1x24x56x56xf32>, tensor<144x24x1x1xf32>, tensor<144xf32>, tensor<144x1x3x3xf32>) -> tensor<1x24x56x56xf32>

// FIT: nncc-opt: error: IR verification failed after parsing: tile.nest block: buffer %m1 (2 x 445440 bytes) does not fit in memory BUF: the nest's buffers there need 945408 bytes, it has 262144
// CORES: nncc-opt: error: IR verification failed after parsing: tile.nest block: buffer %m1 (2 cores x 2 x 44544 bytes) does not fit in memory BUF: the nest's buffers there need 275712 bytes, it has 262144
