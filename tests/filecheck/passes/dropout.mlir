// RUN: nncc-opt %s -p canonicalize-nn | filecheck %s --check-prefix=INFER
// RUN: rm -rf %t && mkdir -p %t && sed 's/builtin.module attributes {/builtin.module attributes {nn.mode = "training", /' %s > %t/in.mlir
// RUN: python -c "import numpy as np; r = np.random.default_rng(0); np.savez('%t/in.weights.npz', w=r.standard_normal((8, 6)).astype(np.float32), fc=r.standard_normal((3, 8)).astype(np.float32))"
// RUN: nncc-opt %t/in.mlir -p 'canonicalize-nn,autodiff{steps=2}' -o %t/out.mlir
// RUN: filecheck %s --input-file %t/out.mlir --check-prefix=TRAIN
// nn.dropout is the identity in inference (canonicalize-nn removes it); in a module marked for
// training (`nncc --train` marks it at import) it stays, and autodiff multiplies by a seeded
// mask, a new one each step, the backward by the same mask.

builtin.module attributes {nn.weights = "in.weights.npz", nn.input_names = ["x"], nn.output_names = ["y"]} {
  // INFER-LABEL: func.func @main
  // INFER-NEXT:    %w = nn.weight "w"
  // INFER-NEXT:    %fc = nn.weight "fc"
  // INFER-NEXT:    %h = nn.gemm %x, %w
  // INFER-NEXT:    %r = nn.relu %h
  // INFER-NEXT:    %y = nn.gemm %r, %fc
  // INFER-NEXT:    func.return %y

  // TRAIN:      %[[M0:.*]] = nn.weight "d.mask0" : tensor<4x8xf32>
  // TRAIN-NEXT: %[[D0:.*]] = nn.mul %{{.*}}, %[[M0]] {nn.phase = "forward"}
  // TRAIN:      nn.mul %{{.*}}, %[[M0]] {nn.phase = "backward"}
  // TRAIN:      %[[M1:.*]] = nn.weight "d.mask1" : tensor<4x8xf32>
  // TRAIN-NEXT: nn.mul %{{.*}}, %[[M1]] {nn.phase = "forward"}
  // TRAIN:      nn.mul %{{.*}}, %[[M1]] {nn.phase = "backward"}
  // TRAIN-NOT:  nn.dropout
  func.func @main(%x: tensor<4x6xf32>) -> tensor<4x3xf32> {
    %w = nn.weight "w" : tensor<8x6xf32>
    %fc = nn.weight "fc" : tensor<3x8xf32>
    %h = nn.gemm %x, %w trans_a false trans_b true alpha 1.0 beta 1.0 : (tensor<4x6xf32>, tensor<8x6xf32>) -> tensor<4x8xf32>
    %r = nn.relu %h : tensor<4x8xf32>
    %d = nn.dropout %r ratio 0.25 : tensor<4x8xf32>
    %y = nn.gemm %d, %fc trans_a false trans_b true alpha 1.0 beta 1.0 : (tensor<4x8xf32>, tensor<3x8xf32>) -> tensor<4x3xf32>
    func.return %y : tensor<4x3xf32>
  }
}
