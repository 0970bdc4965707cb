// RUN: rm -rf %t && mkdir -p %t && cp %s %t/in.mlir
// RUN: python -c "import numpy as np; r = np.random.default_rng(0); f = lambda *s: r.uniform(0.5, 1.5, s).astype(np.float32); np.savez('%t/in.weights.npz', w=f(4, 3, 3, 3), b=f(4), g=f(4), beta=f(4), m=f(4), v=f(4), fc=f(4, 8))"
// RUN: nncc-opt %t/in.mlir -p fold-batch-norm -o %t/out.mlir
// RUN: filecheck %s --input-file %t/out.mlir
// RUN: python -c "import numpy as np; print(sorted(np.load('%t/out.weights.npz').files))" | filecheck %s --check-prefix=STORE
// fold-batch-norm: the BN's scale and shift move into new conv/gemm weights in the weight store.
// (tests/passes/test_fold_batch_norm.py checks the numbers.)

builtin.module attributes {nn.weights = "in.weights.npz"} {
  // CHECK-LABEL: func.func @conv_bn
  // CHECK-NEXT:    %[[W:.*]] = nn.weight "conv.weight.bn" : tensor<4x3x3x3xf32>
  // CHECK-NEXT:    %[[B:.*]] = nn.weight "conv.bias.bn" : tensor<4xf32>
  // CHECK-NEXT:    %[[C:.*]] = nn.conv2d %x, %[[W]], %[[B]] strides [1, 1] pads [1, 1, 1, 1] dilations [1, 1] group 1 {onnx_nodes = ["conv", "bn"]} : (tensor<1x3x8x8xf32>, tensor<4x3x3x3xf32>, tensor<4xf32>) -> tensor<1x4x8x8xf32>
  // CHECK-NEXT:    %[[R:.*]] = nn.relu %[[C]]
  // CHECK-NEXT:    func.return %[[R]]
  func.func @conv_bn(%x: tensor<1x3x8x8xf32>) -> tensor<1x4x8x8xf32> {
    %w = nn.weight "w" : tensor<4x3x3x3xf32>
    %g = nn.weight "g" : tensor<4xf32>
    %beta = nn.weight "beta" : tensor<4xf32>
    %m = nn.weight "m" : tensor<4xf32>
    %v = nn.weight "v" : tensor<4xf32>
    %c = nn.conv2d %x, %w strides [1, 1] pads [1, 1, 1, 1] dilations [1, 1] group 1 {onnx_nodes = ["conv"]} : (tensor<1x3x8x8xf32>, tensor<4x3x3x3xf32>) -> tensor<1x4x8x8xf32>
    %y = nn.batch_norm %c, %g, %beta, %m, %v epsilon 1.0e-05 {onnx_nodes = ["bn"]} : (tensor<1x4x8x8xf32>, tensor<4xf32>, tensor<4xf32>, tensor<4xf32>, tensor<4xf32>) -> tensor<1x4x8x8xf32>
    %r = nn.relu %y : tensor<1x4x8x8xf32>
    func.return %r : tensor<1x4x8x8xf32>
  }

  // A conv with a bias and no onnx_nodes: the new names come from the weight's.
  // CHECK-LABEL: func.func @conv_bias_bn
  // CHECK-NEXT:    %[[W:.*]] = nn.weight "w.weight.bn" : tensor<4x3x3x3xf32>
  // CHECK-NEXT:    %[[B:.*]] = nn.weight "w.bias.bn" : tensor<4xf32>
  // CHECK-NEXT:    %[[C:.*]] = nn.conv2d %x, %[[W]], %[[B]] strides [2, 2] pads [0, 0, 0, 0] dilations [1, 1] group 1 {onnx_nodes = ["bn"]}
  // CHECK-NEXT:    func.return %[[C]]
  func.func @conv_bias_bn(%x: tensor<1x3x8x8xf32>) -> tensor<1x4x3x3xf32> {
    %w = nn.weight "w" : tensor<4x3x3x3xf32>
    %b = nn.weight "b" : tensor<4xf32>
    %g = nn.weight "g" : tensor<4xf32>
    %beta = nn.weight "beta" : tensor<4xf32>
    %m = nn.weight "m" : tensor<4xf32>
    %v = nn.weight "v" : tensor<4xf32>
    %c = nn.conv2d %x, %w, %b strides [2, 2] pads [0, 0, 0, 0] dilations [1, 1] group 1 : (tensor<1x3x8x8xf32>, tensor<4x3x3x3xf32>, tensor<4xf32>) -> tensor<1x4x3x3xf32>
    %y = nn.batch_norm %c, %g, %beta, %m, %v epsilon 1.0e-03 {onnx_nodes = ["bn"]} : (tensor<1x4x3x3xf32>, tensor<4xf32>, tensor<4xf32>, tensor<4xf32>, tensor<4xf32>) -> tensor<1x4x3x3xf32>
    func.return %y : tensor<1x4x3x3xf32>
  }

  // A gemm with features on B's rows (trans_b): B and C are rescaled, beta becomes 1.
  // CHECK-LABEL: func.func @gemm_bn
  // CHECK-NEXT:    %[[W:.*]] = nn.weight "fc.weight.bn" : tensor<4x8xf32>
  // CHECK-NEXT:    %[[B:.*]] = nn.weight "fc.bias.bn" : tensor<4xf32>
  // CHECK-NEXT:    %[[G:.*]] = nn.gemm %a, %[[W]], %[[B]] trans_a false trans_b true alpha 2.000000e+00 beta 1.000000e+00 {onnx_nodes = ["fc", "bn1d"]} : (tensor<2x8xf32>, tensor<4x8xf32>, tensor<4xf32>) -> tensor<2x4xf32>
  // CHECK-NEXT:    func.return %[[G]]
  func.func @gemm_bn(%a: tensor<2x8xf32>) -> tensor<2x4xf32> {
    %fc = nn.weight "fc" : tensor<4x8xf32>
    %b = nn.weight "b" : tensor<4xf32>
    %g = nn.weight "g" : tensor<4xf32>
    %beta = nn.weight "beta" : tensor<4xf32>
    %m = nn.weight "m" : tensor<4xf32>
    %v = nn.weight "v" : tensor<4xf32>
    %y = nn.gemm %a, %fc, %b trans_a false trans_b true alpha 2.0 beta 0.5 {onnx_nodes = ["fc"]} : (tensor<2x8xf32>, tensor<4x8xf32>, tensor<4xf32>) -> tensor<2x4xf32>
    %z = nn.batch_norm %y, %g, %beta, %m, %v epsilon 1.0e-05 {onnx_nodes = ["bn1d"]} : (tensor<2x4xf32>, tensor<4xf32>, tensor<4xf32>, tensor<4xf32>, tensor<4xf32>) -> tensor<2x4xf32>
    func.return %z : tensor<2x4xf32>
  }

  // The conv's result is also returned: folding would change that output. The BN stays.
  // CHECK-LABEL: func.func @conv_used_twice
  // CHECK-NEXT:    %[[W:.*]] = nn.weight "w" : tensor<4x3x3x3xf32>
  // CHECK:         %[[C:.*]] = nn.conv2d %x, %[[W]]
  // CHECK-NEXT:    %[[Y:.*]] = nn.batch_norm %[[C]]
  // CHECK-NEXT:    func.return %[[C]], %[[Y]]
  func.func @conv_used_twice(%x: tensor<1x3x8x8xf32>) -> (tensor<1x4x8x8xf32>, tensor<1x4x8x8xf32>) {
    %w = nn.weight "w" : tensor<4x3x3x3xf32>
    %g = nn.weight "g" : tensor<4xf32>
    %beta = nn.weight "beta" : tensor<4xf32>
    %m = nn.weight "m" : tensor<4xf32>
    %v = nn.weight "v" : tensor<4xf32>
    %c = nn.conv2d %x, %w strides [1, 1] pads [1, 1, 1, 1] dilations [1, 1] group 1 : (tensor<1x3x8x8xf32>, tensor<4x3x3x3xf32>) -> tensor<1x4x8x8xf32>
    %y = nn.batch_norm %c, %g, %beta, %m, %v epsilon 1.0e-05 : (tensor<1x4x8x8xf32>, tensor<4xf32>, tensor<4xf32>, tensor<4xf32>, tensor<4xf32>) -> tensor<1x4x8x8xf32>
    func.return %c, %y : tensor<1x4x8x8xf32>, tensor<1x4x8x8xf32>
  }

  // Not after a conv (here: an input, and a pooling op): the BN stays.
  // CHECK-LABEL: func.func @not_after_conv
  // CHECK:         %[[Y:.*]] = nn.batch_norm %x
  // CHECK-NEXT:    %[[P:.*]] = nn.max_pool %[[Y]]
  // CHECK-NEXT:    %[[Z:.*]] = nn.batch_norm %[[P]]
  // CHECK-NEXT:    func.return %[[Z]]
  func.func @not_after_conv(%x: tensor<1x4x8x8xf32>) -> tensor<1x4x8x8xf32> {
    %g = nn.weight "g" : tensor<4xf32>
    %beta = nn.weight "beta" : tensor<4xf32>
    %m = nn.weight "m" : tensor<4xf32>
    %v = nn.weight "v" : tensor<4xf32>
    %y = nn.batch_norm %x, %g, %beta, %m, %v epsilon 1.0e-05 : (tensor<1x4x8x8xf32>, tensor<4xf32>, tensor<4xf32>, tensor<4xf32>, tensor<4xf32>) -> tensor<1x4x8x8xf32>
    %p = nn.max_pool %y kernel [1, 1] strides [1, 1] pads [0, 0, 0, 0] dilations [1, 1] ceil_mode false : (tensor<1x4x8x8xf32>) -> tensor<1x4x8x8xf32>
    %z = nn.batch_norm %p, %g, %beta, %m, %v epsilon 1.0e-05 : (tensor<1x4x8x8xf32>, tensor<4xf32>, tensor<4xf32>, tensor<4xf32>, tensor<4xf32>) -> tensor<1x4x8x8xf32>
    func.return %z : tensor<1x4x8x8xf32>
  }

  // A weight computed at run time (here: an argument) has no stored values to fold into.
  // CHECK-LABEL: func.func @runtime_weight
  // CHECK:         nn.conv2d %x, %w
  // CHECK-NEXT:    nn.batch_norm
  func.func @runtime_weight(%x: tensor<1x3x8x8xf32>, %w: tensor<4x3x3x3xf32>) -> tensor<1x4x8x8xf32> {
    %g = nn.weight "g" : tensor<4xf32>
    %beta = nn.weight "beta" : tensor<4xf32>
    %m = nn.weight "m" : tensor<4xf32>
    %v = nn.weight "v" : tensor<4xf32>
    %c = nn.conv2d %x, %w strides [1, 1] pads [1, 1, 1, 1] dilations [1, 1] group 1 : (tensor<1x3x8x8xf32>, tensor<4x3x3x3xf32>) -> tensor<1x4x8x8xf32>
    %y = nn.batch_norm %c, %g, %beta, %m, %v epsilon 1.0e-05 : (tensor<1x4x8x8xf32>, tensor<4xf32>, tensor<4xf32>, tensor<4xf32>, tensor<4xf32>) -> tensor<1x4x8x8xf32>
    func.return %y : tensor<1x4x8x8xf32>
  }
}

// Only the weights the IR still references are saved: the folded ones, and the old
// ones that unfolded ops still use.
// STORE: ['beta', 'conv.bias.bn', 'conv.weight.bn', 'fc.bias.bn', 'fc.weight.bn', 'g', 'm', 'v', 'w', 'w.bias.bn', 'w.weight.bn']
