// RUN: rm -rf %t && mkdir -p %t && cp %s %t/in.mlir
// RUN: python -c "import numpy as np; f = np.float32; np.savez('%t/in.weights.npz', c0=f(0.044715), k=f(np.sqrt(2 / np.pi)), one=f(1), half=f(0.5), two=f(2))"
// RUN: nncc-opt %t/in.mlir -p canonicalize-nn -o %t/out.mlir
// RUN: filecheck %s --input-file %t/out.mlir
// canonicalize-nn: GELU's tanh form spelt out as products, adds and a tanh becomes one
// nn.gelu_tanh (tests/compiler/test_pow_exp_cast.py checks the numbers).

builtin.module attributes {nn.weights = "in.weights.npz"} {
  // The legacy exporter's F.gelu(approximate="tanh"): x * (x * x), then 0.5 * (x * (1 + tanh(k * (x + c0 * x^3)))).
  // CHECK-LABEL: func.func @gelu_tanh_legacy
  // CHECK-NEXT:    %[[G:.*]] = nn.gelu_tanh %x {onnx_nodes = ["mul5", "mul4", "add1", "tanh", "mul3", "add", "mul2", "mul1", "mul"]} : tensor<2x16xf32>
  // CHECK-NEXT:    func.return %[[G]]
  func.func @gelu_tanh_legacy(%x: tensor<2x16xf32>) -> tensor<2x16xf32> {
    %c0 = nn.weight "c0" : tensor<f32>
    %k = nn.weight "k" : tensor<f32>
    %one = nn.weight "one" : tensor<f32>
    %half = nn.weight "half" : tensor<f32>
    %sq = nn.mul %x, %x {onnx_nodes = ["mul"]} : (tensor<2x16xf32>, tensor<2x16xf32>) -> tensor<2x16xf32>
    %cube = nn.mul %x, %sq {onnx_nodes = ["mul1"]} : (tensor<2x16xf32>, tensor<2x16xf32>) -> tensor<2x16xf32>
    %c0cube = nn.mul %c0, %cube {onnx_nodes = ["mul2"]} : (tensor<f32>, tensor<2x16xf32>) -> tensor<2x16xf32>
    %inner = nn.add %x, %c0cube {onnx_nodes = ["add"]} : (tensor<2x16xf32>, tensor<2x16xf32>) -> tensor<2x16xf32>
    %arg = nn.mul %k, %inner {onnx_nodes = ["mul3"]} : (tensor<f32>, tensor<2x16xf32>) -> tensor<2x16xf32>
    %t = nn.tanh %arg {onnx_nodes = ["tanh"]} : tensor<2x16xf32>
    %phi = nn.add %one, %t {onnx_nodes = ["add1"]} : (tensor<f32>, tensor<2x16xf32>) -> tensor<2x16xf32>
    %xphi = nn.mul %x, %phi {onnx_nodes = ["mul4"]} : (tensor<2x16xf32>, tensor<2x16xf32>) -> tensor<2x16xf32>
    %y = nn.mul %half, %xphi {onnx_nodes = ["mul5"]} : (tensor<f32>, tensor<2x16xf32>) -> tensor<2x16xf32>
    func.return %y : tensor<2x16xf32>
  }

  // Other associations: (0.5 * x) * (tanh(...) + 1), (x * x) * x * c0, (x + ...) * k.
  // CHECK-LABEL: func.func @gelu_tanh_reassociated
  // CHECK-NEXT:    %[[G:.*]] = nn.gelu_tanh %x : tensor<2x16xf32>
  // CHECK-NEXT:    func.return %[[G]]
  func.func @gelu_tanh_reassociated(%x: tensor<2x16xf32>) -> tensor<2x16xf32> {
    %c0 = nn.weight "c0" : tensor<f32>
    %k = nn.weight "k" : tensor<f32>
    %one = nn.weight "one" : tensor<f32>
    %half = nn.weight "half" : tensor<f32>
    %sq = nn.mul %x, %x : (tensor<2x16xf32>, tensor<2x16xf32>) -> tensor<2x16xf32>
    %cube = nn.mul %sq, %x : (tensor<2x16xf32>, tensor<2x16xf32>) -> tensor<2x16xf32>
    %c0cube = nn.mul %cube, %c0 : (tensor<2x16xf32>, tensor<f32>) -> tensor<2x16xf32>
    %inner = nn.add %c0cube, %x : (tensor<2x16xf32>, tensor<2x16xf32>) -> tensor<2x16xf32>
    %arg = nn.mul %inner, %k : (tensor<2x16xf32>, tensor<f32>) -> tensor<2x16xf32>
    %t = nn.tanh %arg : tensor<2x16xf32>
    %phi = nn.add %t, %one : (tensor<2x16xf32>, tensor<f32>) -> tensor<2x16xf32>
    %hx = nn.mul %half, %x : (tensor<f32>, tensor<2x16xf32>) -> tensor<2x16xf32>
    %y = nn.mul %hx, %phi : (tensor<2x16xf32>, tensor<2x16xf32>) -> tensor<2x16xf32>
    func.return %y : tensor<2x16xf32>
  }

  // Not GELU: x^2 instead of x^3, and a wrong constant (2 instead of 0.5) with the tanh used elsewhere.
  // CHECK-LABEL: func.func @not_gelu_tanh
  // CHECK-NOT:     nn.gelu_tanh
  // CHECK:         nn.tanh
  // CHECK:         func.return
  func.func @not_gelu_tanh(%x: tensor<2x16xf32>) -> tensor<2x16xf32> {
    %c0 = nn.weight "c0" : tensor<f32>
    %k = nn.weight "k" : tensor<f32>
    %one = nn.weight "one" : tensor<f32>
    %half = nn.weight "half" : tensor<f32>
    %sq = nn.mul %x, %x : (tensor<2x16xf32>, tensor<2x16xf32>) -> tensor<2x16xf32>
    %c0sq = nn.mul %c0, %sq : (tensor<f32>, tensor<2x16xf32>) -> tensor<2x16xf32>
    %inner = nn.add %x, %c0sq : (tensor<2x16xf32>, tensor<2x16xf32>) -> tensor<2x16xf32>
    %arg = nn.mul %k, %inner : (tensor<f32>, tensor<2x16xf32>) -> tensor<2x16xf32>
    %t = nn.tanh %arg : tensor<2x16xf32>
    %phi = nn.add %one, %t : (tensor<f32>, tensor<2x16xf32>) -> tensor<2x16xf32>
    %xphi = nn.mul %x, %phi : (tensor<2x16xf32>, tensor<2x16xf32>) -> tensor<2x16xf32>
    %y = nn.mul %half, %xphi : (tensor<f32>, tensor<2x16xf32>) -> tensor<2x16xf32>
    func.return %y : tensor<2x16xf32>
  }
}
