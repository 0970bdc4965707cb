// RUN: nncc-opt %s | nncc-opt | filecheck %s
// RUN: xdsl-opt %s --print-op-generic | nncc-opt | filecheck %s
// Every fused op and activation (and the backward forms fuse-batch-norm-training makes) prints in its custom form and parses back to the same IR,
// also from the generic form; clip bounds that are absent stay absent.

builtin.module {
  func.func @main(%x: tensor<1x3x8x8xf32>, %r: tensor<1x4x8x8xf32>, %g: tensor<1x4xf32>) -> tensor<1x4xf32> {
    %w = nn.weight "c1.w" : tensor<4x3x3x3xf32>
    %b = nn.weight "c1.b" : tensor<4xf32>
    %fc = nn.weight "fc" : tensor<4x4xf32>
    %c0 = fused.conv2d %x, %w strides [1, 1] pads [1, 1, 1, 1] dilations [1, 1] group 1 act none : (tensor<1x3x8x8xf32>, tensor<4x3x3x3xf32>) -> tensor<1x4x8x8xf32>
    %c1 = fused.conv2d %x, %w, %b residual %r strides [1, 1] pads [1, 1, 1, 1] dilations [1, 1] group 1 act relu {onnx_nodes = ["c", "bn", "add", "relu"]} : (tensor<1x3x8x8xf32>, tensor<4x3x3x3xf32>, tensor<4xf32>) -> tensor<1x4x8x8xf32>
    %c2 = fused.conv2d %x, %w residual %c1 strides [1, 1] pads [1, 1, 1, 1] dilations [1, 1] group 1 act clip min 0.0 max 6.0 : (tensor<1x3x8x8xf32>, tensor<4x3x3x3xf32>) -> tensor<1x4x8x8xf32>
    %c3 = fused.conv2d %x, %w strides [1, 1] pads [1, 1, 1, 1] dilations [1, 1] group 1 act clip max 6.0 : (tensor<1x3x8x8xf32>, tensor<4x3x3x3xf32>) -> tensor<1x4x8x8xf32>
    %c4 = fused.conv2d %x, %w strides [1, 1] pads [1, 1, 1, 1] dilations [1, 1] group 1 act clip min -1.0 : (tensor<1x3x8x8xf32>, tensor<4x3x3x3xf32>) -> tensor<1x4x8x8xf32>
    %c5 = fused.conv2d %x, %w strides [1, 1] pads [1, 1, 1, 1] dilations [1, 1] group 1 act leaky_relu alpha 0.01 : (tensor<1x3x8x8xf32>, tensor<4x3x3x3xf32>) -> tensor<1x4x8x8xf32>
    %c6 = fused.conv2d %x, %w strides [1, 1] pads [1, 1, 1, 1] dilations [1, 1] group 1 act hard_sigmoid alpha 0.2 beta 0.5 : (tensor<1x3x8x8xf32>, tensor<4x3x3x3xf32>) -> tensor<1x4x8x8xf32>
    %c7 = fused.conv2d %x, %w strides [1, 1] pads [1, 1, 1, 1] dilations [1, 1] group 1 act hard_swish : (tensor<1x3x8x8xf32>, tensor<4x3x3x3xf32>) -> tensor<1x4x8x8xf32>
    %c8 = fused.conv2d %x, %w strides [1, 1] pads [1, 1, 1, 1] dilations [1, 1] group 1 act sigmoid : (tensor<1x3x8x8xf32>, tensor<4x3x3x3xf32>) -> tensor<1x4x8x8xf32>
    %g1 = fused.gemm %g, %fc, %b residual %g trans_a false trans_b true alpha 1.0 beta 0.5 act hard_sigmoid alpha 0.2 beta 0.5 : (tensor<1x4xf32>, tensor<4x4xf32>, tensor<4xf32>) -> tensor<1x4xf32>
    %g2 = fused.gemm %g1, %fc residual %g trans_a false trans_b false alpha 2.0 beta 1.0 act none : (tensor<1x4xf32>, tensor<4x4xf32>) -> tensor<1x4xf32>
    %g3 = fused.gemm %fc, %fc trans_a true trans_b false alpha 1.0 beta 1.0 act clip min -3.0 max 3.0 : (tensor<4x4xf32>, tensor<4x4xf32>) -> tensor<4x4xf32>
    func.return %g2 : tensor<1x4xf32>
  }
  func.func @backward(%dy: tensor<1x8x4x4xf32>, %w: tensor<8x4x1x1xf32>, %y: tensor<1x4x4x4xf32>, %s: tensor<4xf32>, %r: tensor<1x4x4x4xf32>, %y8: tensor<1x8x4x4xf32>, %s8: tensor<8xf32>) -> tensor<8x4x1x1xf32> {
    %g, %ds, %db, %c2, %c3 = fused.conv2d_backward_data_sums %dy, %w, %y, %s, %s, %s, %s strides [1, 1] pads [0, 0, 0, 0] dilations [1, 1] group 1 relu : tensor<1x8x4x4xf32>, tensor<8x4x1x1xf32>, tensor<1x4x4x4xf32>, tensor<4xf32>, tensor<4xf32>, tensor<4xf32>, tensor<4xf32> -> tensor<1x4x4x4xf32>, tensor<4xf32>, tensor<4xf32>, tensor<4xf32>, tensor<4xf32>
    %h, %ds2, %db2, %c22, %c32 = fused.conv2d_backward_data_sums %dy, %w, %y, %s, %s, %s, %s plus %r : tensor<1x4x4x4xf32> mask %g : tensor<1x4x4x4xf32> strides [1, 1] pads [0, 0, 0, 0] dilations [1, 1] group 1 : tensor<1x8x4x4xf32>, tensor<8x4x1x1xf32>, tensor<1x4x4x4xf32>, tensor<4xf32>, tensor<4xf32>, tensor<4xf32>, tensor<4xf32> -> tensor<1x4x4x4xf32>, tensor<4xf32>, tensor<4xf32>, tensor<4xf32>, tensor<4xf32>
    %k, %ds3, %db3, %c23, %c33, %dx, %zk = fused.conv2d_backward_data_sums %dy, %w, %y, %s, %s, %s, %s pre %y8, %s8, %s8, %s8, %s8 relu : tensor<1x8x4x4xf32>, tensor<8xf32>, tensor<8xf32>, tensor<8xf32>, tensor<8xf32> strides [1, 1] pads [0, 0, 0, 0] dilations [1, 1] group 1 relu : tensor<1x8x4x4xf32>, tensor<8x4x1x1xf32>, tensor<1x4x4x4xf32>, tensor<4xf32>, tensor<4xf32>, tensor<4xf32>, tensor<4xf32> -> tensor<1x4x4x4xf32>, tensor<4xf32>, tensor<4xf32>, tensor<4xf32>, tensor<4xf32>, tensor<1x8x4x4xf32> normalized tensor<1x4x4x4xf32>
    %dxp, %dyp = fused.conv2d_backward_data_pre %y8, %w, %y8, %s8, %s8, %s8, %s8 strides [1, 1] pads [0, 0, 0, 0] dilations [1, 1] group 1 relu : (tensor<1x8x4x4xf32>, tensor<8x4x1x1xf32>, tensor<1x8x4x4xf32>, tensor<8xf32>, tensor<8xf32>, tensor<8xf32>, tensor<8xf32>) -> (tensor<1x4x4x4xf32>, tensor<1x8x4x4xf32>)
    %q, %ds4, %db4, %c24, %c34, %ds5, %db5, %c25, %c35 = fused.conv2d_backward_data_sums %dy, %w, %y, %s, %s, %s, %s mask %g : tensor<1x4x4x4xf32> second %r, %s, %s, %s : tensor<1x4x4x4xf32>, tensor<4xf32>, tensor<4xf32>, tensor<4xf32> strides [1, 1] pads [0, 0, 0, 0] dilations [1, 1] group 1 : tensor<1x8x4x4xf32>, tensor<8x4x1x1xf32>, tensor<1x4x4x4xf32>, tensor<4xf32>, tensor<4xf32>, tensor<4xf32>, tensor<4xf32> -> tensor<1x4x4x4xf32>, tensor<4xf32>, tensor<4xf32>, tensor<4xf32>, tensor<4xf32> second tensor<4xf32>, tensor<4xf32>, tensor<4xf32>, tensor<4xf32>
    %dw = fused.conv2d_backward_filter_pre %h, %s, %s, %dy strides [1, 1] pads [0, 0, 0, 0] dilations [1, 1] group 1 pre relu : (tensor<1x4x4x4xf32>, tensor<4xf32>, tensor<4xf32>, tensor<1x8x4x4xf32>) -> tensor<8x4x1x1xf32>
    func.return %dw : tensor<8x4x1x1xf32>
  }
}

// CHECK-LABEL: func.func @main
// CHECK:      %[[W:.*]] = nn.weight "c1.w" : tensor<4x3x3x3xf32>
// CHECK-NEXT: %[[B:.*]] = nn.weight "c1.b" : tensor<4xf32>
// CHECK-NEXT: %[[FC:.*]] = nn.weight "fc" : tensor<4x4xf32>
// CHECK-NEXT: %{{.*}} = fused.conv2d %x, %[[W]] strides [1, 1] pads [1, 1, 1, 1] dilations [1, 1] group 1 act none : (tensor<1x3x8x8xf32>, tensor<4x3x3x3xf32>) -> tensor<1x4x8x8xf32>
// CHECK-NEXT: %[[C1:.*]] = fused.conv2d %x, %[[W]], %[[B]] residual %r strides [1, 1] pads [1, 1, 1, 1] dilations [1, 1] group 1 act relu {onnx_nodes = ["c", "bn", "add", "relu"]} : (tensor<1x3x8x8xf32>, tensor<4x3x3x3xf32>, tensor<4xf32>) -> tensor<1x4x8x8xf32>
// CHECK-NEXT: %{{.*}} = fused.conv2d %x, %[[W]] residual %[[C1]] strides [1, 1] pads [1, 1, 1, 1] dilations [1, 1] group 1 act clip min 0.000000e+00 max 6.000000e+00 : (tensor<1x3x8x8xf32>, tensor<4x3x3x3xf32>) -> tensor<1x4x8x8xf32>
// CHECK-NEXT: %{{.*}} = fused.conv2d %x, %[[W]] strides [1, 1] pads [1, 1, 1, 1] dilations [1, 1] group 1 act clip max 6.000000e+00 :
// CHECK-NEXT: %{{.*}} = fused.conv2d %x, %[[W]] strides [1, 1] pads [1, 1, 1, 1] dilations [1, 1] group 1 act clip min -1.000000e+00 :
// CHECK-NEXT: %{{.*}} = fused.conv2d {{.*}} act leaky_relu alpha 1.000000e-02 :
// CHECK-NEXT: %{{.*}} = fused.conv2d {{.*}} act hard_sigmoid alpha 2.000000e-01 beta 5.000000e-01 :
// CHECK-NEXT: %{{.*}} = fused.conv2d {{.*}} act hard_swish :
// CHECK-NEXT: %{{.*}} = fused.conv2d {{.*}} act sigmoid :
// CHECK-NEXT: %[[G1:.*]] = fused.gemm %g, %[[FC]], %[[B]] residual %g trans_a false trans_b true alpha 1.000000e+00 beta 5.000000e-01 act hard_sigmoid alpha 2.000000e-01 beta 5.000000e-01 : (tensor<1x4xf32>, tensor<4x4xf32>, tensor<4xf32>) -> tensor<1x4xf32>
// CHECK-NEXT: %[[G2:.*]] = fused.gemm %[[G1]], %[[FC]] residual %g trans_a false trans_b false alpha 2.000000e+00 beta 1.000000e+00 act none : (tensor<1x4xf32>, tensor<4x4xf32>) -> tensor<1x4xf32>
// CHECK-NEXT: %{{.*}} = fused.gemm %[[FC]], %[[FC]] trans_a true trans_b false alpha 1.000000e+00 beta 1.000000e+00 act clip min -3.000000e+00 max 3.000000e+00 : (tensor<4x4xf32>, tensor<4x4xf32>) -> tensor<4x4xf32>
// CHECK-NEXT: func.return %[[G2]] : tensor<1x4xf32>

// CHECK-LABEL: func.func @backward
// CHECK-NEXT: %[[G:.*]], %{{.*}}, %{{.*}}, %{{.*}}, %{{.*}} = fused.conv2d_backward_data_sums %dy, %w, %y, %s, %s, %s, %s strides [1, 1] pads [0, 0, 0, 0] dilations [1, 1] group 1 relu : tensor<1x8x4x4xf32>, tensor<8x4x1x1xf32>, tensor<1x4x4x4xf32>, tensor<4xf32>, tensor<4xf32>, tensor<4xf32>, tensor<4xf32> -> tensor<1x4x4x4xf32>, tensor<4xf32>, tensor<4xf32>, tensor<4xf32>, tensor<4xf32>
// CHECK-NEXT: %[[H:.*]], %{{.*}}, %{{.*}}, %{{.*}}, %{{.*}} = fused.conv2d_backward_data_sums %dy, %w, %y, %s, %s, %s, %s plus %r : tensor<1x4x4x4xf32> mask %[[G]] : tensor<1x4x4x4xf32> strides [1, 1] pads [0, 0, 0, 0] dilations [1, 1] group 1 : tensor<1x8x4x4xf32>,
// CHECK-NEXT: %{{.*}}, %{{.*}}, %{{.*}}, %{{.*}}, %{{.*}}, %{{.*}}, %{{.*}} = fused.conv2d_backward_data_sums %dy, %w, %y, %s, %s, %s, %s pre %y8, %s8, %s8, %s8, %s8 relu : tensor<1x8x4x4xf32>, tensor<8xf32>, tensor<8xf32>, tensor<8xf32>, tensor<8xf32> strides [1, 1] pads [0, 0, 0, 0] dilations [1, 1] group 1 relu : tensor<1x8x4x4xf32>, tensor<8x4x1x1xf32>, tensor<1x4x4x4xf32>, tensor<4xf32>, tensor<4xf32>, tensor<4xf32>, tensor<4xf32> -> tensor<1x4x4x4xf32>, tensor<4xf32>, tensor<4xf32>, tensor<4xf32>, tensor<4xf32>, tensor<1x8x4x4xf32> normalized tensor<1x4x4x4xf32>
// CHECK-NEXT: %{{.*}}, %{{.*}} = fused.conv2d_backward_data_pre %y8, %w, %y8, %s8, %s8, %s8, %s8 strides [1, 1] pads [0, 0, 0, 0] dilations [1, 1] group 1 relu : (tensor<1x8x4x4xf32>, tensor<8x4x1x1xf32>, tensor<1x8x4x4xf32>, tensor<8xf32>, tensor<8xf32>, tensor<8xf32>, tensor<8xf32>) -> (tensor<1x4x4x4xf32>, tensor<1x8x4x4xf32>)
// CHECK-NEXT: %{{.*}}, %{{.*}}, %{{.*}}, %{{.*}}, %{{.*}}, %{{.*}}, %{{.*}}, %{{.*}}, %{{.*}} = fused.conv2d_backward_data_sums %dy, %w, %y, %s, %s, %s, %s mask %[[G]] : tensor<1x4x4x4xf32> second %r, %s, %s, %s : tensor<1x4x4x4xf32>, tensor<4xf32>, tensor<4xf32>, tensor<4xf32> strides [1, 1] pads [0, 0, 0, 0] dilations [1, 1] group 1 : tensor<1x8x4x4xf32>, tensor<8x4x1x1xf32>, tensor<1x4x4x4xf32>, tensor<4xf32>, tensor<4xf32>, tensor<4xf32>, tensor<4xf32> -> tensor<1x4x4x4xf32>, tensor<4xf32>, tensor<4xf32>, tensor<4xf32>, tensor<4xf32> second tensor<4xf32>, tensor<4xf32>, tensor<4xf32>, tensor<4xf32>
// CHECK-NEXT: %[[DW:.*]] = fused.conv2d_backward_filter_pre %[[H]], %s, %s, %dy strides [1, 1] pads [0, 0, 0, 0] dilations [1, 1] group 1 pre relu : (tensor<1x4x4x4xf32>, tensor<4xf32>, tensor<4xf32>, tensor<1x8x4x4xf32>) -> tensor<8x4x1x1xf32>
// CHECK-NEXT: func.return %[[DW]] : tensor<8x4x1x1xf32>
