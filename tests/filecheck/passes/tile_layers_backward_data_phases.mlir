// RUN: rm -rf %t && mkdir -p %t && cp %s %t/in.mlir
// RUN: python -c "import numpy as np; np.savez('%t/in.weights.npz', unused=np.ones(1, np.float32))"
// RUN: nncc-opt %t/in.mlir -p 'partition-cores{target=fusion},tile-layers' | filecheck %s
// tile-layers writes a stride-2 conv's backward-data (3x3, pads top 1, left 1, bottom 1, right 0:
// dx 7x8, its last row dropped by the forward) as one nest of its 2 x 2 phases: per phase (r, q)
// the taps that reach rows r, r + 2, ... and columns q, q + 2, ... (1x1, 1x2, 2x1, 2x2: every tap
// once, flipped, packed one phase after another), the dy window that phase reads, and its
// stride-1 conv. Here the cost model keeps the interleaved form: each phase's conv writes its
// rows and columns of one 8 x 8 tile of dx on chip (phase (r, q) at row r, column q; `pitch
// [128, 16]`: every second row and column), stored in whole rows through dx itself, the rows
// and columns cut at dx's edges (7 rows). (The other form, each phase stored through a view of
// dx strided by 2, is tested against PyTorch in tests/training/test_backward_data_phases.py.)

// CHECK:      %dx = tile.nest "dx" (%dy, %w) -> tensor<2x8x7x8xf32> attributes {op = "nn.conv2d_backward_data", onnx_nodes = [], phases = "2x2"} {
// CHECK-NEXT: ^bb0(%DY: tensor<2x16x4x4xf32>, %W: tensor<16x8x3x3xf32>, %Y: tensor<2x8x7x8xf32>):
// CHECK-NEXT:   %Wp = tile.relayout %W shape [1, 16, 8, 3, 3] permutation [0, 3, 4, 1, 2] : tensor<16x8x3x3xf32> -> tensor<1x3x3x16x8xf32>
// CHECK-NEXT:   %in = tile.buffer "input" slots 2 : memref<1600xf32, "IBUF">
// CHECK-NEXT:   %wt = tile.buffer "weight" slots 2 shared : memref<1152xf32, "WBUF">
// CHECK-NEXT:   %out = tile.buffer "output" slots 2 : memref<512xf32, "OBUF">
// CHECK-NEXT:   tile.for %oc[%toc] = 0 to 8 step 8 order naive {
// CHECK-NEXT:     tile.for %n[%tn] = 0 to 2 step 1, %oh[%toh] = 0 to 4 step 4, %ow[%tow] = 0 to 4 step 4 cores 1 order serpentine {
// CHECK-NEXT:       tile.for %ic[%tic] = 0 to 16 step 16 order serpentine {
// CHECK-NEXT:         tile.load %DY[%n, %ic, %oh, %ow] [1, %tic, %toh, %tow] -> %in[0] dims [2, 3, 1]
// CHECK-NEXT:         tile.load %Wp[0, 1, 1, %ic, %oc] [1, 1, 1, %tic, %toc] -> %wt[0] dims [1, 2, 3, 4]
// CHECK-NEXT:         tile.conv %in[0], %wt[0] -> %out[0] sizes [%toh, %tow, %tic, %toc] pitch [128, 16] kernel [1, 1] strides [1, 1] dilations [1, 1] reduce %ic
// CHECK-NEXT:         tile.load %DY[%n, %ic, %oh, %ow] [1, %tic, %toh, %tow + 1] -> %in[400] dims [2, 3, 1]
// CHECK-NEXT:         tile.load %Wp[0, 1, 2, %ic, %oc] [1, 1, 1, %tic, %toc] -> %wt[%tic * 8] dims [1, 2, 3, 4]
// CHECK-NEXT:         tile.load %Wp[0, 1, 0, %ic, %oc] [1, 1, 1, %tic, %toc] -> %wt[%tic * 16] dims [1, 2, 3, 4]
// CHECK-NEXT:         tile.conv %in[400], %wt[%tic * 8] -> %out[8] sizes [%toh, %tow, %tic, %toc] pitch [128, 16] kernel [1, 2] strides [1, 1] dilations [1, 1] reduce %ic
// CHECK-NEXT:         tile.load %DY[%n, %ic, %oh, %ow] [1, %tic, %toh + 1, %tow] -> %in[800] dims [2, 3, 1]
// CHECK-NEXT:         tile.load %Wp[0, 2, 1, %ic, %oc] [1, 1, 1, %tic, %toc] -> %wt[%tic * 24] dims [1, 2, 3, 4]
// CHECK-NEXT:         tile.load %Wp[0, 0, 1, %ic, %oc] [1, 1, 1, %tic, %toc] -> %wt[%tic * 32] dims [1, 2, 3, 4]
// CHECK-NEXT:         tile.conv %in[800], %wt[%tic * 24] -> %out[64] sizes [%toh, %tow, %tic, %toc] pitch [128, 16] kernel [2, 1] strides [1, 1] dilations [1, 1] reduce %ic
// CHECK-NEXT:         tile.load %DY[%n, %ic, %oh, %ow] [1, %tic, %toh + 1, %tow + 1] -> %in[1200] dims [2, 3, 1]
// CHECK-NEXT:         tile.load %Wp[0, 2, 2, %ic, %oc] [1, 1, 1, %tic, %toc] -> %wt[%tic * 40] dims [1, 2, 3, 4]
// CHECK-NEXT:         tile.load %Wp[0, 2, 0, %ic, %oc] [1, 1, 1, %tic, %toc] -> %wt[%tic * 48] dims [1, 2, 3, 4]
// CHECK-NEXT:         tile.load %Wp[0, 0, 2, %ic, %oc] [1, 1, 1, %tic, %toc] -> %wt[%tic * 56] dims [1, 2, 3, 4]
// CHECK-NEXT:         tile.load %Wp[0, 0, 0, %ic, %oc] [1, 1, 1, %tic, %toc] -> %wt[%tic * 64] dims [1, 2, 3, 4]
// CHECK-NEXT:         tile.conv %in[1200], %wt[%tic * 40] -> %out[72] sizes [%toh, %tow, %tic, %toc] pitch [128, 16] kernel [2, 2] strides [1, 1] dilations [1, 1] reduce %ic
// CHECK-NEXT:       }
// CHECK-NEXT:       %rows = tile.min [%toh * 2, %oh * (-2) + 7]
// CHECK-NEXT:       %cols = tile.min [%tow * 2, %ow * (-2) + 8]
// CHECK-NEXT:       tile.store %out[0] strides [64, 8, 1] -> %Y[%n, %oc, %oh * 2, %ow * 2] [1, %toc, %rows, %cols] dims [2, 3, 1]
// CHECK-NEXT:     }
// CHECK-NEXT:   }

builtin.module attributes {nn.weights = "in.weights.npz"} {
  func.func @main(%dy: tensor<2x16x4x4xf32>, %w: tensor<16x8x3x3xf32>) -> tensor<2x8x7x8xf32> {
    %dx = nn.conv2d_backward_data %dy, %w strides [2, 2] pads [1, 1, 1, 0] dilations [1, 1] group 1 : (tensor<2x16x4x4xf32>, tensor<16x8x3x3xf32>) -> tensor<2x8x7x8xf32>
    func.return %dx : tensor<2x8x7x8xf32>
  }
}
