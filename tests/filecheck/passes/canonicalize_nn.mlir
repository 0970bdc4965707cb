// RUN: nncc-opt %s -p canonicalize-nn | filecheck %s

builtin.module {
  // CHECK-LABEL: func.func @reshape_chain
  // CHECK-NEXT:    %[[R:.*]] = nn.reshape %x {onnx_nodes = ["a", "b"]} : (tensor<1x8x1x1xf32>) -> tensor<8xf32>
  // CHECK-NEXT:    func.return %[[R]]
  func.func @reshape_chain(%x: tensor<1x8x1x1xf32>) -> tensor<8xf32> {
    %a = nn.reshape %x {onnx_nodes = ["a"]} : (tensor<1x8x1x1xf32>) -> tensor<1x8xf32>
    %b = nn.reshape %a {onnx_nodes = ["b"]} : (tensor<1x8xf32>) -> tensor<8xf32>
    func.return %b : tensor<8xf32>
  }

  // CHECK-LABEL: func.func @identities
  // CHECK-NEXT:    func.return %x
  func.func @identities(%x: tensor<2x3xf32>) -> tensor<2x3xf32> {
    %a = nn.reshape %x : (tensor<2x3xf32>) -> tensor<2x3xf32>
    %b = nn.transpose %a perm [0, 1] : (tensor<2x3xf32>) -> tensor<2x3xf32>
    func.return %b : tensor<2x3xf32>
  }

  // CHECK-LABEL: func.func @transpose_chain
  // CHECK-NEXT:    %[[T:.*]] = nn.transpose %x perm [2, 0, 1] : (tensor<2x3x4xf32>) -> tensor<4x2x3xf32>
  // CHECK-NEXT:    func.return %[[T]]
  func.func @transpose_chain(%x: tensor<2x3x4xf32>) -> tensor<4x2x3xf32> {
    %a = nn.transpose %x perm [1, 2, 0] : (tensor<2x3x4xf32>) -> tensor<3x4x2xf32>
    %b = nn.transpose %a perm [1, 2, 0] : (tensor<3x4x2xf32>) -> tensor<4x2x3xf32>
    func.return %b : tensor<4x2x3xf32>
  }

  // A bounded clip stays; unused ops and weights go.
  // CHECK-LABEL: func.func @dead_code
  // CHECK-NEXT:    %[[C:.*]] = nn.clip %x min 0.000000e+00 max 6.000000e+00
  // CHECK-NEXT:    func.return %[[C]]
  func.func @dead_code(%x: tensor<2x3xf32>) -> tensor<2x3xf32> {
    %w = nn.weight "unused" : tensor<2x3xf32>
    %dead = nn.add %x, %w : (tensor<2x3xf32>, tensor<2x3xf32>) -> tensor<2x3xf32>
    %c = nn.clip %x min 0.0 max 6.0 : tensor<2x3xf32>
    func.return %c : tensor<2x3xf32>
  }
}
