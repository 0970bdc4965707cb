// RUN: rm -rf %t && mkdir -p %t && cp %s %t/in.mlir
// RUN: python -c "import numpy as np; np.savez('%t/in.weights.npz', w=np.ones((8, 3, 3, 3), np.float32), b=np.ones(8, np.float32))"
// RUN: nncc-opt %t/in.mlir -p 'partition-cores{target=edge},tile-layers' | filecheck %s
// RUN: nncc-opt %t/in.mlir -p 'partition-cores{target=vector},tile-layers{tile-order=naive},double-buffer' | filecheck %s --check-prefix=WIDTH
// tile-layers writes each conv as its loop nest: the weights seen in the kernels' layout, the
// input, weight and output buffers in the target's memories (one slot each: double-buffer
// gives them a second), the output-channel tiles, the spatial tiles dealt to the cores, the
// input-channel tiles (serpentine under Scan), the input window with its halo and zero padding
// as slice bounds, the conv with its epilogue, and the store. On `vector` this conv (8 output
// channels: half a vector; 64 output columns: 4) gets the width mapping: output columns on the
// lanes, [rows][channels][columns] tiles, micro-kernel calls of 6 channels x 4 vectors.

// CHECK:      %y = tile.nest "y" (%x, %w, %b) -> tensor<1x8x16x64xf32> attributes {op = "fused.conv2d", onnx_nodes = ["conv", "relu"]} {
// CHECK-NEXT: ^bb0(%X: tensor<1x3x16x64xf32>, %W: tensor<8x3x3x3xf32>, %B: tensor<8xf32>, %Y: tensor<1x8x16x64xf32>):
// CHECK-NEXT:   %Wv = tile.relayout %W shape [1, 8, 3, 3, 3] permutation [0, 3, 4, 2, 1] : tensor<8x3x3x3xf32> -> tensor<1x3x3x3x8xf32>
// CHECK-NEXT:   %in = tile.buffer "input" slots 1 {{(shared )?}}: memref<{{[0-9]+}}x{{[0-9]+}}x3xf32, "BUF">
// CHECK-NEXT:   %wt = tile.buffer "weight" slots 1 {{(shared )?}}: memref<{{[0-9]+}}xf32, "BUF">
// CHECK-NEXT:   %out = tile.buffer "output" slots 1 : memref<{{[0-9]+}}x{{[0-9]+}}x8xf32, "BUF">
// CHECK-NEXT:   tile.for %oc[%toc] = 0 to 8 step 8 order naive {
// CHECK-NEXT:     tile.for %n[%tn] = 0 to 1 step 1, %oh[%toh] = 0 to 16 step {{[0-9]+}}, %ow[%tow] = 0 to 64 step {{[0-9]+}} cores 1 order serpentine {
// CHECK-NEXT:       tile.for %ic[%tic] = 0 to 3 step 3 order serpentine {
// CHECK-NEXT:         tile.load %X[%n, %ic, %oh - 1, %ow - 1] [1, %tic, %toh + 2, %tow + 2] -> %in[0] dims [2, 3, 1]
// CHECK-NEXT:         tile.load %Wv[0, 0, 0, %ic, %oc] [1, 3, 3, %tic, %toc] -> %wt[0] dims [1, 2, 3, 4]
// CHECK-NEXT:         tile.load %B[%oc] [%toc] -> %wt[{{[0-9]+}}] dims [0]
// CHECK-NEXT:         tile.conv %in[0], %wt[0] -> %out[0] sizes [%toh, %tow, %tic, %toc] kernel [3, 3] strides [1, 1] dilations [1, 1] reduce %ic bias %wt[{{[0-9]+}}] act relu
// CHECK-NEXT:       }
// CHECK-NEXT:       tile.store %out[0] -> %Y[%n, %oc, %oh, %ow] [1, %toc, %toh, %tow] dims [2, 3, 1]
// CHECK-NEXT:     }
// CHECK-NEXT:   }

// WIDTH:      %Wv = tile.relayout %W shape [1, 8, 3, 3, 3] permutation [0, 3, 4, 1, 2] : tensor<8x3x3x3xf32> -> tensor<1x3x3x8x3xf32>
// WIDTH-NEXT: %in = tile.buffer "input" slots 2 : memref<{{[0-9]+}}x3x{{[0-9]+}}xf32, "AM">
// WIDTH:      tile.for %n[%tn] = 0 to 1 step 1, %oh[%toh] = 0 to 16 step {{[0-9]+}}, %ow[%tow] = 0 to 64 step {{[0-9]+}} cores 4 order naive {
// WIDTH-NEXT:   tile.for %ic[%tic] = 0 to 3 step 3 order naive {
// WIDTH-NEXT:     tile.load %X[%n, %ic, %oh - 1, %ow - 1] [1, %tic, %toh + 2, %tow + 2] -> %in[0] dims [2, 1, 3]
// WIDTH:          tile.conv %in[0], %wt[0] -> %out[0] sizes [%toh, %tow, %tic, %toc] kernel [3, 3] strides [1, 1] dilations [1, 1] reduce %ic mapping width bias %wt[{{[0-9]+}}] act relu

builtin.module attributes {nn.weights = "in.weights.npz"} {
  func.func @main(%x: tensor<1x3x16x64xf32>) -> tensor<1x8x16x64xf32> {
    %w = nn.weight "w" : tensor<8x3x3x3xf32>
    %b = nn.weight "b" : tensor<8xf32>
    %y = fused.conv2d %x, %w, %b strides [1, 1] pads [1, 1, 1, 1] dilations [1, 1] group 1 act relu {onnx_nodes = ["conv", "relu"]} : (tensor<1x3x16x64xf32>, tensor<8x3x3x3xf32>, tensor<8xf32>) -> tensor<1x8x16x64xf32>
    func.return %y : tensor<1x8x16x64xf32>
  }
}
