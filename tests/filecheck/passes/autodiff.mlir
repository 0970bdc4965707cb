// RUN: rm -rf %t && mkdir -p %t && cp %s %t/in.mlir
// RUN: python -c "import numpy as np; r = np.random.default_rng(0); f = lambda *s: r.uniform(0.5, 1.5, s).astype(np.float32); np.savez('%t/in.weights.npz', w=f(4, 3, 3, 3), b=f(4), fc=f(3, 64))"
// RUN: nncc-opt %t/in.mlir -p 'autodiff{lr=0.5 momentum=0.9}' -o %t/out.mlir
// RUN: filecheck %s --input-file %t/out.mlir
// autodiff: forward, the loss (the trailing softmax folded into it), the backward in reverse
// order (the relu's two readers' gradients summed), the SGD update with a velocity per weight.
// (tests/training/ checks the numbers against PyTorch.)

// CHECK: builtin.module attributes {{{.*}}nn.input_names = ["x", "target"], nn.output_names = ["loss", "grad.w", "grad.b", "grad.fc", "updated.w", "updated.b", "updated.fc", "velocity.w", "velocity.b", "velocity.fc"], nn.mode = "training"}
builtin.module attributes {nn.weights = "in.weights.npz", nn.input_names = ["x"], nn.output_names = ["probs"]} {
  // CHECK:      func.func @main(%x: tensor<2x3x4x4xf32>, %target: tensor<2x3xf32>) -> (tensor<1xf32>,
  // CHECK:        %[[VW:.*]] = nn.weight "w.velocity" : tensor<4x3x3x3xf32>
  // CHECK:        %[[C:.*]] = nn.conv2d %x, %[[W:.*]], %[[B:.*]] strides {{.*}} {onnx_nodes = ["conv"], nn.phase = "forward"}
  // CHECK-NEXT:   %[[R:.*]] = nn.relu %[[C]]
  // CHECK-NEXT:   %[[S:.*]] = nn.add %[[R]], %[[R]]
  // CHECK-NEXT:   %[[F:.*]] = nn.reshape %[[S]]
  // CHECK-NEXT:   %[[Y:.*]] = nn.gemm %[[F]], %[[FC:.*]] trans_a false trans_b true
  // CHECK-NOT:    nn.softmax %
  // CHECK-NEXT:   %[[L:.*]] = nn.softmax_cross_entropy %[[Y]], %target {nn.phase = "forward"}
  // CHECK-NEXT:   %[[DL:.*]] = nn.softmax_cross_entropy_backward %[[Y]], %target {nn.phase = "backward"}
  // CHECK-NEXT:   %[[DF:.*]] = nn.gemm %[[DL]], %[[FC]] trans_a false trans_b false
  // CHECK-NEXT:   %[[DFC:.*]] = nn.gemm %[[DL]], %[[F]] trans_a true trans_b false
  // CHECK-NEXT:   %[[DS:.*]] = nn.reshape %[[DF]]
  // CHECK-NEXT:   %[[DR:.*]] = nn.add %[[DS]], %[[DS]]
  // CHECK-NEXT:   %[[DC:.*]] = nn.relu_backward %[[DR]], %[[C]]
  // CHECK-NOT:    nn.conv2d_backward_data
  // CHECK-NEXT:   %[[DW:.*]] = nn.conv2d_backward_filter %x, %[[DC]] strides [1, 1] pads [1, 1, 1, 1] dilations [1, 1] group 1
  // CHECK-NEXT:   %[[DB:.*]] = nn.reduce_sum %[[DC]] axes [0, 2, 3]
  // CHECK-NEXT:   %[[W1:.*]], %[[V1:.*]] = nn.sgd %[[W]], %[[DW]], %[[VW]] lr 5.000000e-01 momentum 9.000000e-01 weight_decay 0.000000e+00 {nn.phase = "update"}
  // CHECK:        func.return %[[L]], %[[DW]], %[[DB]], %[[DFC]], %[[W1]],
  func.func @main(%x: tensor<2x3x4x4xf32>) -> tensor<2x3xf32> {
    %w = nn.weight "w" : tensor<4x3x3x3xf32>
    %b = nn.weight "b" : tensor<4xf32>
    %fc = nn.weight "fc" : tensor<3x64xf32>
    %c = nn.conv2d %x, %w, %b strides [1, 1] pads [1, 1, 1, 1] dilations [1, 1] group 1 {onnx_nodes = ["conv"]} : (tensor<2x3x4x4xf32>, tensor<4x3x3x3xf32>, tensor<4xf32>) -> tensor<2x4x4x4xf32>
    %r = nn.relu %c : tensor<2x4x4x4xf32>
    %s = nn.add %r, %r : (tensor<2x4x4x4xf32>, tensor<2x4x4x4xf32>) -> tensor<2x4x4x4xf32>
    %f = nn.reshape %s : (tensor<2x4x4x4xf32>) -> tensor<2x64xf32>
    %y = nn.gemm %f, %fc trans_a false trans_b true alpha 1.0 beta 1.0 : (tensor<2x64xf32>, tensor<3x64xf32>) -> tensor<2x3xf32>
    %p = nn.softmax %y axis 1 : tensor<2x3xf32>
    func.return %p : tensor<2x3xf32>
  }
}
