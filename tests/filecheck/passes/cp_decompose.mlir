// RUN: rm -rf %t && mkdir -p %t && cp %s %t/in.mlir
// RUN: python -c "import numpy as np; r = np.random.default_rng(0); f = lambda *s: r.standard_normal(s).astype(np.float32); np.savez('%t/in.weights.npz', w=f(8, 6, 3, 5), b=f(8), dw=f(6, 1, 3, 3))"
// RUN: nncc-opt %t/in.mlir -p 'cp-decompose{rank=4}' -o %t/out.mlir
// RUN: filecheck %s --input-file %t/out.mlir
// RUN: python -c "import numpy as np; print(sorted(np.load('%t/out.weights.npz').files))" | filecheck %s --check-prefix=STORE
// RUN: nncc-opt %t/in.mlir -p 'cp-decompose{rank=0.25}' | filecheck %s --check-prefix=FRACTION
// RUN: not nncc-opt %t/in.mlir -p 'cp-decompose{rank=0}' 2>&1 | filecheck %s --check-prefix=BAD
// cp-decompose: a KxK conv becomes 1x1 -> depthwise Kx1 (stride, pads and dilation in height) ->
// depthwise 1xK (in width) -> 1x1 with the conv's bias; a depthwise conv is left alone.
// (tests/passes/test_cp_decompose.py checks the numbers.)

// CHECK: builtin.module attributes {nn.weights = "out.weights.npz", nn.cp_decompose = [{layer = "y", rank = 4 : i64, weight_error = {{.*}} : f64, weights_before = 720 : i64, weights_after = 88 : i64}]}
builtin.module attributes {nn.weights = "in.weights.npz"} {
  // CHECK-LABEL: func.func @main
  // CHECK-NEXT:    %[[B:.*]] = nn.weight "b" : tensor<8xf32>
  // CHECK-NEXT:    %[[DW:.*]] = nn.weight "dw" : tensor<6x1x3x3xf32>
  // CHECK-NEXT:    %[[WIN:.*]] = nn.weight "conv.cp.in" : tensor<4x6x1x1xf32>
  // CHECK-NEXT:    %[[WV:.*]] = nn.weight "conv.cp.vertical" : tensor<4x1x3x1xf32>
  // CHECK-NEXT:    %[[WH:.*]] = nn.weight "conv.cp.horizontal" : tensor<4x1x1x5xf32>
  // CHECK-NEXT:    %[[WOUT:.*]] = nn.weight "conv.cp.out" : tensor<8x4x1x1xf32>
  // CHECK-NEXT:    %[[IN:.*]] = nn.conv2d %x, %[[WIN]] strides [1, 1] pads [0, 0, 0, 0] dilations [1, 1] group 1 {onnx_nodes = ["conv"]} : (tensor<1x6x12x14xf32>, tensor<4x6x1x1xf32>) -> tensor<1x4x12x14xf32>
  // CHECK-NEXT:    %[[V:.*]] = nn.conv2d %[[IN]], %[[WV]] strides [2, 1] pads [1, 0, 2, 0] dilations [2, 1] group 4 {onnx_nodes = ["conv"]} : (tensor<1x4x12x14xf32>, tensor<4x1x3x1xf32>) -> tensor<1x4x6x14xf32>
  // CHECK-NEXT:    %[[H:.*]] = nn.conv2d %[[V]], %[[WH]] strides [1, 3] pads [0, 2, 0, 1] dilations [1, 1] group 4 {onnx_nodes = ["conv"]} : (tensor<1x4x6x14xf32>, tensor<4x1x1x5xf32>) -> tensor<1x4x6x5xf32>
  // CHECK-NEXT:    %[[Y:.*]] = nn.conv2d %[[H]], %[[WOUT]], %[[B]] strides [1, 1] pads [0, 0, 0, 0] dilations [1, 1] group 1 {onnx_nodes = ["conv"]} : (tensor<1x4x6x5xf32>, tensor<8x4x1x1xf32>, tensor<8xf32>) -> tensor<1x8x6x5xf32>
  // CHECK-NEXT:    %{{.*}} = nn.conv2d %x, %[[DW]] strides [1, 1] pads [1, 1, 1, 1] dilations [1, 1] group 6
  // CHECK-NEXT:    func.return %[[Y]], %{{.*}} : tensor<1x8x6x5xf32>, tensor<1x6x12x14xf32>
  func.func @main(%x: tensor<1x6x12x14xf32>) -> (tensor<1x8x6x5xf32>, tensor<1x6x12x14xf32>) {
    %w = nn.weight "w" : tensor<8x6x3x5xf32>
    %b = nn.weight "b" : tensor<8xf32>
    %dw = nn.weight "dw" : tensor<6x1x3x3xf32>
    %y = nn.conv2d %x, %w, %b strides [2, 3] pads [1, 2, 2, 1] dilations [2, 1] group 1 {onnx_nodes = ["conv"]} : (tensor<1x6x12x14xf32>, tensor<8x6x3x5xf32>, tensor<8xf32>) -> tensor<1x8x6x5xf32>
    %z = nn.conv2d %x, %dw strides [1, 1] pads [1, 1, 1, 1] dilations [1, 1] group 6 : (tensor<1x6x12x14xf32>, tensor<6x1x3x3xf32>) -> tensor<1x6x12x14xf32>
    func.return %y, %z : tensor<1x8x6x5xf32>, tensor<1x6x12x14xf32>
  }
}

// STORE: ['b', 'conv.cp.horizontal', 'conv.cp.in', 'conv.cp.out', 'conv.cp.vertical', 'dw']

// rank=0.25: R = round(0.25 * 720 / (6 + 3 + 5 + 8)) = round(8.18) = 8
// FRACTION: rank = 8 : i64
// FRACTION: nn.weight "conv.cp.in" : tensor<8x6x1x1xf32>

// BAD: nncc-opt: error: pass cp-decompose failed: cp-decompose: rank=0: an absolute rank must be >= 1
