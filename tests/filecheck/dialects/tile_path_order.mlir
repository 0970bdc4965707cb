// RUN: nncc-opt %s | nncc-opt | filecheck %s
// RUN: xdsl-opt %s --print-op-generic | nncc-opt | filecheck %s
// RUN: sed 's/order path \[0, 1, 3, 2, 5, 4\]/order path [0, 1, 3, 2, 5]/' %s | not nncc-opt 2>&1 | filecheck %s --check-prefix=SHORT
// RUN: sed 's/order path \[0, 1, 3, 2, 5, 4\]/order path [0, 1, 3, 3, 5, 4]/' %s | not nncc-opt 2>&1 | filecheck %s --check-prefix=SHORT
// RUN: xdsl-opt %s --print-op-generic | sed 's/order = "path"/order = "serpentine"/' | not nncc-opt 2>&1 | filecheck %s --check-prefix=KIND
// A loop walked in an explicit order (`order path`: the points' row-major indices, here a
// 2 x 3 grid of output-channel by row tiles, the last row tile fragmented) prints and parses
// back, also from the generic form; only the loop that needs a list carries one. A list that is
// not a permutation of the loop's points, or a list on another order, is a verifier error.

builtin.module {
  func.func @main(%x: tensor<1x8x10x4xf32>, %w: tensor<16x8x1x1xf32>) -> tensor<1x16x10x4xf32> {
    %y = tile.nest "conv" (%x, %w) -> tensor<1x16x10x4xf32> attributes {op = "fused.conv2d"} {
    ^bb0(%X: tensor<1x8x10x4xf32>, %W: tensor<16x8x1x1xf32>, %Y: tensor<1x16x10x4xf32>):
      %Wp = tile.relayout %W shape [1, 16, 8, 1, 1] permutation [0, 3, 4, 2, 1] : tensor<16x8x1x1xf32> -> tensor<1x1x1x8x16xf32>
      %in = tile.buffer "input" slots 2 : memref<4x4x8xf32, "L1">
      %wt = tile.buffer "weight" slots 2 : memref<64xf32, "L1">
      %out = tile.buffer "output" slots 2 : memref<4x4x8xf32, "L1">
      tile.for %oc[%toc] = 0 to 16 step 8, %oh[%toh] = 0 to 10 step 4 cores 1 order path [0, 1, 3, 2, 5, 4] {
        tile.for %ic[%tic] = 0 to 8 step 8 order serpentine {
          tile.load %X[0, %ic, %oh, 0] [1, %tic, %toh, 4] -> %in[0] dims [2, 3, 1]
          tile.load %Wp[0, 0, 0, %ic, %oc] [1, 1, 1, %tic, %toc] -> %wt[0] dims [1, 2, 3, 4]
        }
      }
    } : (tensor<1x8x10x4xf32>, tensor<16x8x1x1xf32>) -> tensor<1x16x10x4xf32>
    func.return %y : tensor<1x16x10x4xf32>
  }
}

// CHECK-LABEL: func.func @main
// CHECK:       tile.for %{{.*}}[%{{.*}}] = 0 to 16 step 8, %{{.*}}[%{{.*}}] = 0 to 10 step 4 cores 1 order path [0, 1, 3, 2, 5, 4] {
// CHECK-NEXT:    tile.for %{{.*}}[%{{.*}}] = 0 to 8 step 8 order serpentine {

// SHORT: tile.for: order path must list each of the loop's 6 points (row-major indices 0 to 5) once
// KIND: tile.for: a list of points goes with order path, and only with it
