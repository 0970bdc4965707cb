// RUN: rm -rf %t && mkdir -p %t && cp %s %t/in.mlir
// RUN: python -c "import numpy as np; r = np.random.default_rng(0); f = lambda *s: r.uniform(0.5, 1.5, s).astype(np.float32); np.savez('%t/in.weights.npz', w1=f(64, 3, 3, 3), s1=f(64), b1=f(64), m1=f(64), v1=f(64), w2=f(256, 64, 1, 1), s2=f(256), b2=f(256), m2=f(256), v2=f(256), fc=f(3, 256))"
// RUN: nncc-opt %t/in.mlir -p 'autodiff,fuse-batch-norm-training{target=fusion}' -o %t/out.mlir
// RUN: filecheck %s --input-file %t/out.mlir
// fuse-batch-norm-training, BatchNorm backward's elementwise part as pre-processing: bn2's
// reductions are a pass (its gradient is global pooling's), so its input gradient
// dx2 = scale2 g + c2 y2 + c3 (g masked by relu2's step) would be a pass too; at this size (dx2
// 8x256x16x16, read by conv2's 1x1 backward-data as its gradient tiles) the cost model times
// making it on the pre unit from each g tile (with y2's tile and the four per-channel factors)
// faster. conv2's backward-data (which also carries bn1's reductions as post-processing) reads
// g and y2 (`pre ... relu`) and gives dx2 as its last result, stored once for conv2's
// backward-filter, which reads it; `fused.bn` of conv2's statistics records `backward =
// "pre-processing"`. Its post unit also gives relu1's output (`normalized`, conv2's
// backward-filter's input). (tests/training/ checks the numbers, and prediction = simulation.)

builtin.module attributes {nn.weights = "in.weights.npz", nn.input_names = ["x"], nn.output_names = ["fc_y"]} {
  func.func @main(%x: tensor<8x3x16x16xf32>) -> tensor<8x3xf32> {
    %w1 = nn.weight "w1" : tensor<64x3x3x3xf32>
    %s1 = nn.weight "s1" : tensor<64xf32>
    %b1 = nn.weight "b1" : tensor<64xf32>
    %m1 = nn.weight "m1" : tensor<64xf32>
    %v1 = nn.weight "v1" : tensor<64xf32>
    %w2 = nn.weight "w2" : tensor<256x64x1x1xf32>
    %s2 = nn.weight "s2" : tensor<256xf32>
    %b2 = nn.weight "b2" : tensor<256xf32>
    %m2 = nn.weight "m2" : tensor<256xf32>
    %v2 = nn.weight "v2" : tensor<256xf32>
    %fc = nn.weight "fc" : tensor<3x256xf32>
    %conv1_y = nn.conv2d %x, %w1 strides [1, 1] pads [1, 1, 1, 1] dilations [1, 1] group 1 {onnx_nodes = ["conv1"]} : (tensor<8x3x16x16xf32>, tensor<64x3x3x3xf32>) -> tensor<8x64x16x16xf32>
    %bn1_y = nn.batch_norm %conv1_y, %s1, %b1, %m1, %v1 epsilon 1.000000e-05 {onnx_nodes = ["bn1"]} : (tensor<8x64x16x16xf32>, tensor<64xf32>, tensor<64xf32>, tensor<64xf32>, tensor<64xf32>) -> tensor<8x64x16x16xf32>
    %relu1_y = nn.relu %bn1_y {onnx_nodes = ["relu1"]} : tensor<8x64x16x16xf32>
    %conv2_y = nn.conv2d %relu1_y, %w2 strides [1, 1] pads [0, 0, 0, 0] dilations [1, 1] group 1 {onnx_nodes = ["conv2"]} : (tensor<8x64x16x16xf32>, tensor<256x64x1x1xf32>) -> tensor<8x256x16x16xf32>
    %bn2_y = nn.batch_norm %conv2_y, %s2, %b2, %m2, %v2 epsilon 1.000000e-05 {onnx_nodes = ["bn2"]} : (tensor<8x256x16x16xf32>, tensor<256xf32>, tensor<256xf32>, tensor<256xf32>, tensor<256xf32>) -> tensor<8x256x16x16xf32>
    %relu2_y = nn.relu %bn2_y {onnx_nodes = ["relu2"]} : tensor<8x256x16x16xf32>
    %gap_y = nn.global_avg_pool %relu2_y {onnx_nodes = ["gap"]} : (tensor<8x256x16x16xf32>) -> tensor<8x256x1x1xf32>
    %flat_y = nn.reshape %gap_y {onnx_nodes = ["flat"]} : (tensor<8x256x1x1xf32>) -> tensor<8x256xf32>
    %fc_y = nn.gemm %flat_y, %fc trans_a false trans_b true alpha 1.000000e+00 beta 1.000000e+00 {onnx_nodes = ["fc"]} : (tensor<8x256xf32>, tensor<3x256xf32>) -> tensor<8x3xf32>
    func.return %fc_y : tensor<8x3xf32>
  }
}

// CHECK:      %[[Y1:.*]], %{{.*}}, %{{.*}} = fused.conv2d_stats %x, %w1 {{.*}} fused.bn = {apply = "pre", saved = "backward-data post-processing", backward = "pass"}}
// CHECK:      %[[Y2:.*]], %{{.*}}, %{{.*}} = fused.conv2d_pre %[[Y1]], {{.*}} fused.bn = {apply = "layer", saved = "forward", backward = "pre-processing"}}
// CHECK-NEXT: %{{.*}}, %{{.*}}, %[[SCALE2:.*]], %[[SHIFT2:.*]], %{{.*}}, %{{.*}} = fused.batch_norm_factors
// CHECK:      %{{.*}}, %{{.*}}, %[[C2:.*]], %[[C3:.*]] = fused.batch_norm_backward_sums %[[G2:.*]], %[[Y2]], %[[SCALE2]], %[[SHIFT2]], %{{.*}}, %{{.*}} relu
// CHECK-NOT:  fused.batch_norm_backward_apply %[[G2]]
// CHECK:      %[[G1:.*]], %{{.*}}, %{{.*}}, %[[C2A:.*]], %[[C3A:.*]], %[[DX2:.*]], %[[Z1:.*]] = fused.conv2d_backward_data_sums %[[G2]], %w2, %[[Y1]], {{.*}} pre %[[Y2]], %[[SCALE2]], %[[SHIFT2]], %[[C2]], %[[C3]] relu : tensor<8x256x16x16xf32>, tensor<256xf32>, tensor<256xf32>, tensor<256xf32>, tensor<256xf32> strides [1, 1] pads [0, 0, 0, 0] dilations [1, 1] group 1 relu
// CHECK-SAME: -> tensor<8x64x16x16xf32>, tensor<64xf32>, tensor<64xf32>, tensor<64xf32>, tensor<64xf32>, tensor<8x256x16x16xf32> normalized tensor<8x64x16x16xf32>
// CHECK-NEXT: nn.conv2d_backward_filter %[[Z1]], %[[DX2]]
// CHECK:      fused.batch_norm_backward_apply %[[G1]], %[[Y1]], {{.*}}, %[[C2A]], %[[C3A]]
// CHECK-NOT:  nn.batch_norm_backward
