// RUN: rm -rf %t && mkdir -p %t && cp %s %t/in.mlir
// RUN: python -c "import numpy as np; r = np.random.default_rng(0); f = lambda *s: r.uniform(0.5, 1.5, s).astype(np.float32); np.savez('%t/in.weights.npz', w1=f(4, 3, 3, 3), s1=f(4), b1=f(4), m1=f(4), v1=f(4), w2=f(4, 4, 1, 1), s2=f(4), b2=f(4), m2=f(4), v2=f(4), fc=f(3, 4))"
// RUN: nncc-opt %t/in.mlir -p 'autodiff,fuse-batch-norm-training{target=fusion}' -o %t/out.mlir
// RUN: filecheck %s --input-file %t/out.mlir
// fuse-batch-norm-training: conv1's BatchNorm statistics come from conv1's output tiles
// (fused.conv2d_stats), its apply and ReLU become conv2's pre-processing (fused.conv2d_pre, which
// also gives bn2's statistics); bn2's ReLU feeds global pooling, so it is applied as a layer in
// the forward. bn1's backward reductions and relu1's mask are post-processing of
// conv2's backward-data (fused.conv2d_backward_data_sums: the masked gradient, dscale, dbias
// and the input gradient's factors; and relu1's output, `normalized`, which its post unit makes
// beside the mask and stores for conv2's backward-filter: `fused.bn = {saved = "backward-data
// post-processing"}`, the cost model times that faster than a recompute pass and than
// fused.conv2d_backward_filter_pre), so only its elementwise apply is a pass of its own; bn2's
// elementwise part is a pass too (at this size the cost model times that faster than
// pre-processing conv2's backward-data gradient tiles: `fused.bn` records `backward = "pass"`;
// fuse_batch_norm_training_pre.mlir has the other choice). No
// nn.batch_norm_train is left. (tests/training/ checks the numbers.)

builtin.module attributes {nn.weights = "in.weights.npz", nn.input_names = ["x"], nn.output_names = ["fc_y"]} {
  func.func @main(%x: tensor<2x3x4x4xf32>) -> tensor<2x3xf32> {
    %w1 = nn.weight "w1" : tensor<4x3x3x3xf32>
    %s1 = nn.weight "s1" : tensor<4xf32>
    %b1 = nn.weight "b1" : tensor<4xf32>
    %m1 = nn.weight "m1" : tensor<4xf32>
    %v1 = nn.weight "v1" : tensor<4xf32>
    %w2 = nn.weight "w2" : tensor<4x4x1x1xf32>
    %s2 = nn.weight "s2" : tensor<4xf32>
    %b2 = nn.weight "b2" : tensor<4xf32>
    %m2 = nn.weight "m2" : tensor<4xf32>
    %v2 = nn.weight "v2" : tensor<4xf32>
    %fc = nn.weight "fc" : tensor<3x4xf32>
    %conv1_y = nn.conv2d %x, %w1 strides [1, 1] pads [1, 1, 1, 1] dilations [1, 1] group 1 {onnx_nodes = ["conv1"]} : (tensor<2x3x4x4xf32>, tensor<4x3x3x3xf32>) -> tensor<2x4x4x4xf32>
    %bn1_y = nn.batch_norm %conv1_y, %s1, %b1, %m1, %v1 epsilon 1.000000e-05 {onnx_nodes = ["bn1"]} : (tensor<2x4x4x4xf32>, tensor<4xf32>, tensor<4xf32>, tensor<4xf32>, tensor<4xf32>) -> tensor<2x4x4x4xf32>
    %relu1_y = nn.relu %bn1_y {onnx_nodes = ["relu1"]} : tensor<2x4x4x4xf32>
    %conv2_y = nn.conv2d %relu1_y, %w2 strides [1, 1] pads [0, 0, 0, 0] dilations [1, 1] group 1 {onnx_nodes = ["conv2"]} : (tensor<2x4x4x4xf32>, tensor<4x4x1x1xf32>) -> tensor<2x4x4x4xf32>
    %bn2_y = nn.batch_norm %conv2_y, %s2, %b2, %m2, %v2 epsilon 1.000000e-05 {onnx_nodes = ["bn2"]} : (tensor<2x4x4x4xf32>, tensor<4xf32>, tensor<4xf32>, tensor<4xf32>, tensor<4xf32>) -> tensor<2x4x4x4xf32>
    %relu2_y = nn.relu %bn2_y {onnx_nodes = ["relu2"]} : tensor<2x4x4x4xf32>
    %gap_y = nn.global_avg_pool %relu2_y {onnx_nodes = ["gap"]} : (tensor<2x4x4x4xf32>) -> tensor<2x4x1x1xf32>
    %flat_y = nn.reshape %gap_y {onnx_nodes = ["flat"]} : (tensor<2x4x1x1xf32>) -> tensor<2x4xf32>
    %fc_y = nn.gemm %flat_y, %fc trans_a false trans_b true alpha 1.000000e+00 beta 1.000000e+00 {onnx_nodes = ["fc"]} : (tensor<2x4xf32>, tensor<3x4xf32>) -> tensor<2x3xf32>
    func.return %fc_y : tensor<2x3xf32>
  }
}

// CHECK-NOT:  nn.batch_norm_train
// CHECK:      %[[Y1:.*]], %[[SUM1:.*]], %[[SQ1:.*]] = fused.conv2d_stats %x, %w1 strides [1, 1] pads [1, 1, 1, 1] dilations [1, 1] group 1 {onnx_nodes = ["conv1"], nn.phase = "forward", fused.bn = {apply = "pre", saved = "backward-data post-processing", backward = "pass"}}
// CHECK-NEXT: %[[MEAN1:.*]], %[[INV1:.*]], %[[SCALE1:.*]], %[[SHIFT1:.*]], %{{.*}}, %{{.*}} = fused.batch_norm_factors %[[SUM1]], %[[SQ1]], %s1, %b1, %m1, %v1 count 32 epsilon 1.000000e-05 momentum 9.000000e-01 {nn.phase = "forward", onnx_nodes = ["bn1"]}
// CHECK:      %[[Y2:.*]], %[[SUM2:.*]], %[[SQ2:.*]] = fused.conv2d_pre %[[Y1]], %[[SCALE1]], %[[SHIFT1]], %w2 strides [1, 1] pads [0, 0, 0, 0] dilations [1, 1] group 1 pre relu {onnx_nodes = ["conv2"], nn.phase = "forward", fused.bn = {apply = "layer", saved = "forward", backward = "pass"}}
// CHECK-NEXT: %{{.*}}, %{{.*}}, %[[SCALE2:.*]], %[[SHIFT2:.*]], %{{.*}}, %{{.*}} = fused.batch_norm_factors %[[SUM2]], %[[SQ2]], %s2, %b2, %m2, %v2
// CHECK-NEXT: %[[Z2:.*]] = fused.batch_norm_apply %[[Y2]], %[[SCALE2]], %[[SHIFT2]] act relu {nn.phase = "forward", onnx_nodes = ["relu2"]}
// CHECK-NEXT: nn.global_avg_pool %[[Z2]]
// CHECK-NOT:  nn.relu_backward
// CHECK:      %{{.*}}, %{{.*}}, %[[C2B:.*]], %[[C3B:.*]] = fused.batch_norm_backward_sums %[[G2:.*]], %[[Y2]], %[[SCALE2]], %[[SHIFT2]], %{{.*}}, %{{.*}} relu {nn.phase = "backward", onnx_nodes = ["bn2"]}
// CHECK-NEXT: %[[DX2:.*]] = fused.batch_norm_backward_apply %[[G2]], %[[Y2]], %[[SCALE2]], %[[SHIFT2]], %[[C2B]], %[[C3B]] relu
// CHECK-NEXT: %[[G1:.*]], %{{.*}}, %{{.*}}, %[[C2A:.*]], %[[C3A:.*]], %[[Z1:.*]] = fused.conv2d_backward_data_sums %[[DX2]], %w2, %[[Y1]], %[[SCALE1]], %[[SHIFT1]], %[[MEAN1]], %[[INV1]] strides [1, 1] pads [0, 0, 0, 0] dilations [1, 1] group 1 relu
// CHECK-SAME: -> tensor<2x4x4x4xf32>, tensor<4xf32>, tensor<4xf32>, tensor<4xf32>, tensor<4xf32> normalized tensor<2x4x4x4xf32>
// CHECK-NEXT: nn.conv2d_backward_filter %[[Z1]], %[[DX2]]
// CHECK-NEXT: fused.batch_norm_backward_apply %[[G1]], %[[Y1]], %[[SCALE1]], %[[SHIFT1]], %[[C2A]], %[[C3A]] {nn.phase
// CHECK-NOT:  nn.batch_norm_train
// CHECK-NOT:  nn.batch_norm_backward
