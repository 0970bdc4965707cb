// RUN: rm -rf %t && mkdir -p %t && cp %s %t/in.mlir
// RUN: python -c "import numpy as np; f = np.float32; np.savez('%t/in.weights.npz', sqrt2=f(np.sqrt(2)), rsqrt2=f(1 / np.sqrt(2)), one=f(1), half=f(0.5), two=f(2))"
// RUN: nncc-opt %t/in.mlir -p canonicalize-nn -o %t/out.mlir
// RUN: filecheck %s --input-file %t/out.mlir
// canonicalize-nn: GELU as PyTorch exports it (Div/Erf/Add/Mul/Mul) becomes one nn.gelu, and
// x * sigmoid(x) one nn.silu (tests/compiler/test_activations.py checks the numbers).

builtin.module attributes {nn.weights = "in.weights.npz"} {
  // The legacy exporter's form: (x * (1 + erf(x / sqrt2))) * 0.5.
  // CHECK-LABEL: func.func @gelu_legacy
  // CHECK-NEXT:    %[[G:.*]] = nn.gelu %x {onnx_nodes = ["div", "erf", "add", "mul", "mul2"]} : tensor<1x4x8x8xf32>
  // CHECK-NEXT:    func.return %[[G]]
  func.func @gelu_legacy(%x: tensor<1x4x8x8xf32>) -> tensor<1x4x8x8xf32> {
    %sqrt2 = nn.weight "sqrt2" : tensor<f32>
    %one = nn.weight "one" : tensor<f32>
    %half = nn.weight "half" : tensor<f32>
    %d = nn.div %x, %sqrt2 {onnx_nodes = ["div"]} : (tensor<1x4x8x8xf32>, tensor<f32>) -> tensor<1x4x8x8xf32>
    %e = nn.erf %d {onnx_nodes = ["erf"]} : tensor<1x4x8x8xf32>
    %a = nn.add %e, %one {onnx_nodes = ["add"]} : (tensor<1x4x8x8xf32>, tensor<f32>) -> tensor<1x4x8x8xf32>
    %m = nn.mul %x, %a {onnx_nodes = ["mul"]} : (tensor<1x4x8x8xf32>, tensor<1x4x8x8xf32>) -> tensor<1x4x8x8xf32>
    %y = nn.mul %m, %half {onnx_nodes = ["mul2"]} : (tensor<1x4x8x8xf32>, tensor<f32>) -> tensor<1x4x8x8xf32>
    func.return %y : tensor<1x4x8x8xf32>
  }

  // Other association and operand orders, and x * (1 / sqrt2) instead of x / sqrt2.
  // CHECK-LABEL: func.func @gelu_reassociated
  // CHECK-NEXT:    %[[G:.*]] = nn.gelu %x : tensor<2x16xf32>
  // CHECK-NEXT:    func.return %[[G]]
  func.func @gelu_reassociated(%x: tensor<2x16xf32>) -> tensor<2x16xf32> {
    %rsqrt2 = nn.weight "rsqrt2" : tensor<f32>
    %one = nn.weight "one" : tensor<f32>
    %half = nn.weight "half" : tensor<f32>
    %d = nn.mul %rsqrt2, %x : (tensor<f32>, tensor<2x16xf32>) -> tensor<2x16xf32>
    %e = nn.erf %d : tensor<2x16xf32>
    %a = nn.add %one, %e : (tensor<f32>, tensor<2x16xf32>) -> tensor<2x16xf32>
    %h = nn.mul %half, %x : (tensor<f32>, tensor<2x16xf32>) -> tensor<2x16xf32>
    %y = nn.mul %a, %h : (tensor<2x16xf32>, tensor<2x16xf32>) -> tensor<2x16xf32>
    func.return %y : tensor<2x16xf32>
  }

  // Not GELU: a wrong constant (2 instead of sqrt2), or an intermediate result used elsewhere.
  // CHECK-LABEL: func.func @not_gelu
  // CHECK-NOT:     nn.gelu
  // CHECK:         nn.erf
  // CHECK:         nn.erf
  // CHECK:         func.return
  func.func @not_gelu(%x: tensor<2x16xf32>) -> (tensor<2x16xf32>, tensor<2x16xf32>, tensor<2x16xf32>) {
    %two = nn.weight "two" : tensor<f32>
    %sqrt2 = nn.weight "sqrt2" : tensor<f32>
    %one = nn.weight "one" : tensor<f32>
    %half = nn.weight "half" : tensor<f32>
    %d = nn.div %x, %two : (tensor<2x16xf32>, tensor<f32>) -> tensor<2x16xf32>
    %e = nn.erf %d : tensor<2x16xf32>
    %a = nn.add %e, %one : (tensor<2x16xf32>, tensor<f32>) -> tensor<2x16xf32>
    %m = nn.mul %x, %a : (tensor<2x16xf32>, tensor<2x16xf32>) -> tensor<2x16xf32>
    %y = nn.mul %m, %half : (tensor<2x16xf32>, tensor<f32>) -> tensor<2x16xf32>
    %d2 = nn.div %x, %sqrt2 : (tensor<2x16xf32>, tensor<f32>) -> tensor<2x16xf32>
    %e2 = nn.erf %d2 : tensor<2x16xf32>
    %a2 = nn.add %e2, %one : (tensor<2x16xf32>, tensor<f32>) -> tensor<2x16xf32>
    %m2 = nn.mul %x, %a2 : (tensor<2x16xf32>, tensor<2x16xf32>) -> tensor<2x16xf32>
    %y2 = nn.mul %m2, %half : (tensor<2x16xf32>, tensor<f32>) -> tensor<2x16xf32>
    func.return %y, %y2, %a2 : tensor<2x16xf32>, tensor<2x16xf32>, tensor<2x16xf32>
  }

  // SiLU: x * sigmoid(x), either operand order; a sigmoid with another user stays.
  // CHECK-LABEL: func.func @silu
  // CHECK-NEXT:    %[[A:.*]] = nn.silu %x {onnx_nodes = ["sig", "mul"]} : tensor<1x4x8x8xf32>
  // CHECK-NEXT:    %[[S:.*]] = nn.sigmoid %[[A]]
  // CHECK-NEXT:    %[[M:.*]] = nn.mul %[[S]], %[[A]]
  // CHECK-NEXT:    func.return %[[M]], %[[S]]
  func.func @silu(%x: tensor<1x4x8x8xf32>) -> (tensor<1x4x8x8xf32>, tensor<1x4x8x8xf32>) {
    %s = nn.sigmoid %x {onnx_nodes = ["sig"]} : tensor<1x4x8x8xf32>
    %y = nn.mul %s, %x {onnx_nodes = ["mul"]} : (tensor<1x4x8x8xf32>, tensor<1x4x8x8xf32>) -> tensor<1x4x8x8xf32>
    %s2 = nn.sigmoid %y : tensor<1x4x8x8xf32>
    %y2 = nn.mul %s2, %y : (tensor<1x4x8x8xf32>, tensor<1x4x8x8xf32>) -> tensor<1x4x8x8xf32>
    func.return %y2, %s2 : tensor<1x4x8x8xf32>, tensor<1x4x8x8xf32>
  }
}
