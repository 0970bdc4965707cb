// RUN: rm -rf %t && mkdir -p %t && cp %s %t/in.mlir
// RUN: python -c "import numpy as np; r = np.random.default_rng(0); f = lambda *s: r.uniform(0.5, 1.5, s).astype(np.float32); np.savez('%t/in.weights.npz', w=f(8, 16), fc=f(3, 4))"
// RUN: nncc-opt %t/in.mlir -p 'autodiff{lr=0.5}' -o %t/out.mlir
// RUN: filecheck %s --input-file %t/out.mlir
// autodiff of Erf on its own (erf'(x) = 2 / sqrt(pi) exp(-x^2)) and of a slice with negative
// steps (rows 1, 0; columns 3, 1): each reversed axis of the gradient reversed back (`nn.slice`
// by -1), then placed as the positive-step slice from its lowest element (columns 1, 3: spread
// with zeros, trimmed, a zero column before). (tests/training/ checks the numbers against PyTorch.)

// CHECK:      %[[E:.*]] = nn.erf %[[H:.*]] {nn.phase = "forward"}
// CHECK-NEXT: nn.slice %[[E]] starts [0, 1, 3] steps [1, -1, -2] {nn.phase = "forward"}
// CHECK:      %[[DS:.*]] = nn.reshape %{{.*}} {nn.phase = "backward"} : (tensor<2x4xf32>) -> tensor<2x2x2xf32>
// CHECK-NEXT: %[[R2:.*]] = nn.slice %[[DS]] starts [0, 0, 1] steps [1, 1, -1] {nn.phase = "backward"} : (tensor<2x2x2xf32>) -> tensor<2x2x2xf32>
// CHECK-NEXT: %[[Z:.*]] = nn.weight "s.zeros" : tensor<2x2x2x1xf32>
// CHECK-NEXT: %[[C2:.*]] = nn.reshape %[[R2]] {{.*}} -> tensor<2x2x2x1xf32>
// CHECK-NEXT: %[[SP:.*]] = nn.concat %[[C2]], %[[Z]] axis 3
// CHECK-NEXT: %[[ROWS:.*]] = nn.reshape %[[SP]] {{.*}} -> tensor<2x2x4xf32>
// CHECK-NEXT: %[[TRIM:.*]] = nn.slice %[[ROWS]] starts [0, 0, 0] steps [1, 1, 1] {{.*}} -> tensor<2x2x3xf32>
// CHECK-NEXT: %[[Z1:.*]] = nn.weight "s.zeros.1" : tensor<2x2x1xf32>
// CHECK-NEXT: %[[P2:.*]] = nn.concat %[[Z1]], %[[TRIM]] axis 2 {{.*}} -> tensor<2x2x4xf32>
// CHECK-NEXT: %[[R1:.*]] = nn.slice %[[P2]] starts [0, 1, 0] steps [1, -1, 1] {nn.phase = "backward"} : (tensor<2x2x4xf32>) -> tensor<2x2x4xf32>
// CHECK-NEXT: %[[SQ:.*]] = nn.mul %[[H]], %[[H]] {nn.phase = "backward"}
// CHECK-NEXT: %[[NEG:.*]] = nn.scale %[[SQ]] factor -1.000000e+00
// CHECK-NEXT: %[[EXP:.*]] = nn.exp %[[NEG]]
// CHECK-NEXT: %[[SLOPE:.*]] = nn.scale %[[EXP]] factor 1.1283791670955126
// CHECK-NEXT: %{{.*}} = nn.mul %[[R1]], %[[SLOPE]] {nn.phase = "backward"}
builtin.module attributes {nn.weights = "in.weights.npz", nn.input_names = ["x"], nn.output_names = ["y"]} {
  func.func @main(%x: tensor<2x16xf32>) -> tensor<2x3xf32> {
    %w = nn.weight "w" : tensor<8x16xf32>
    %fc = nn.weight "fc" : tensor<3x4xf32>
    %g = nn.gemm %x, %w trans_a false trans_b true alpha 1.0 beta 1.0 : (tensor<2x16xf32>, tensor<8x16xf32>) -> tensor<2x8xf32>
    %h = nn.reshape %g : (tensor<2x8xf32>) -> tensor<2x2x4xf32>
    %e = nn.erf %h : tensor<2x2x4xf32>
    %s = nn.slice %e starts [0, 1, 3] steps [1, -1, -2] : (tensor<2x2x4xf32>) -> tensor<2x2x2xf32>
    %f = nn.reshape %s : (tensor<2x2x2xf32>) -> tensor<2x4xf32>
    %y = nn.gemm %f, %fc trans_a false trans_b true alpha 1.0 beta 1.0 : (tensor<2x4xf32>, tensor<3x4xf32>) -> tensor<2x3xf32>
    func.return %y : tensor<2x3xf32>
  }
}
