// RUN: nncc-opt %s | nncc-opt | filecheck %s
// Every training op of the nn dialect (what autodiff emits) prints in its custom form and parses back.

builtin.module {
  func.func @main(%x: tensor<2x8x8x8xf32>, %dy: tensor<2x16x4x4xf32>, %w: tensor<16x8x3x3xf32>, %c: tensor<8xf32>, %l: tensor<2x10xf32>, %t: tensor<2x10xf32>, %p: tensor<2x8x4x4xf32>, %g: tensor<2x8x1x1xf32>) -> tensor<1xf32> {
    // CHECK: nn.conv2d_backward_data %dy, %w strides [2, 2] pads [1, 0, 0, 1] dilations [1, 1] group 1 : (tensor<2x16x4x4xf32>, tensor<16x8x3x3xf32>) -> tensor<2x8x8x8xf32>
    %dx = nn.conv2d_backward_data %dy, %w strides [2, 2] pads [1, 0, 0, 1] dilations [1, 1] group 1 : (tensor<2x16x4x4xf32>, tensor<16x8x3x3xf32>) -> tensor<2x8x8x8xf32>
    // CHECK: nn.conv2d_backward_filter %x, %dy strides [2, 2] pads [1, 0, 0, 1] dilations [1, 1] group 1 : (tensor<2x8x8x8xf32>, tensor<2x16x4x4xf32>) -> tensor<16x8x3x3xf32>
    %dw = nn.conv2d_backward_filter %x, %dy strides [2, 2] pads [1, 0, 0, 1] dilations [1, 1] group 1 : (tensor<2x8x8x8xf32>, tensor<2x16x4x4xf32>) -> tensor<16x8x3x3xf32>
    // CHECK: nn.reduce_sum %dy axes [0, 2, 3] : (tensor<2x16x4x4xf32>) -> tensor<16xf32>
    %db = nn.reduce_sum %dy axes [0, 2, 3] : (tensor<2x16x4x4xf32>) -> tensor<16xf32>
    // CHECK: nn.scale %c factor -1.000000e+00 : tensor<8xf32>
    %n = nn.scale %c factor -1.0 : tensor<8xf32>
    // CHECK: %{{.*}}, %{{.*}}, %{{.*}}, %{{.*}}, %{{.*}} = nn.batch_norm_train %x, %c, %c, %c, %c epsilon 1.000000e-05 momentum 9.000000e-01
    %y, %mean, %invstd, %rm, %rv = nn.batch_norm_train %x, %c, %c, %c, %c epsilon 1.0e-05 momentum 0.9 : (tensor<2x8x8x8xf32>, tensor<8xf32>, tensor<8xf32>, tensor<8xf32>, tensor<8xf32>) -> (tensor<2x8x8x8xf32>, tensor<8xf32>, tensor<8xf32>, tensor<8xf32>, tensor<8xf32>)
    // CHECK: nn.batch_norm_backward %x, %x, %c, %{{.*}}, %{{.*}} :
    %bx, %bs, %bb = nn.batch_norm_backward %x, %x, %c, %mean, %invstd : (tensor<2x8x8x8xf32>, tensor<2x8x8x8xf32>, tensor<8xf32>, tensor<8xf32>, tensor<8xf32>) -> (tensor<2x8x8x8xf32>, tensor<8xf32>, tensor<8xf32>)
    // CHECK: nn.relu_backward %x, %x : tensor<2x8x8x8xf32>
    %a1 = nn.relu_backward %x, %x : tensor<2x8x8x8xf32>
    // CHECK: nn.sigmoid_backward
    %a2 = nn.sigmoid_backward %x, %x : tensor<2x8x8x8xf32>
    // CHECK: nn.hard_swish_backward
    %a3 = nn.hard_swish_backward %x, %x : tensor<2x8x8x8xf32>
    // CHECK: nn.leaky_relu_backward %x, %x alpha 1.000000e-02 : tensor<2x8x8x8xf32>
    %a4 = nn.leaky_relu_backward %x, %x alpha 0.01 : tensor<2x8x8x8xf32>
    // CHECK: nn.clip_backward %x, %x min 0.000000e+00 max 6.000000e+00 : tensor<2x8x8x8xf32>
    %a5 = nn.clip_backward %x, %x min 0.0 max 6.0 : tensor<2x8x8x8xf32>
    // CHECK: nn.hard_sigmoid_backward %x, %x alpha 2.000000e-01 beta 5.000000e-01 : tensor<2x8x8x8xf32>
    %a6 = nn.hard_sigmoid_backward %x, %x alpha 0.2 beta 0.5 : tensor<2x8x8x8xf32>
    // CHECK: nn.tanh_backward %x, %x : tensor<2x8x8x8xf32>
    %a7 = nn.tanh_backward %x, %x : tensor<2x8x8x8xf32>
    // CHECK: nn.silu_backward %x, %x : tensor<2x8x8x8xf32>
    %a8 = nn.silu_backward %x, %x : tensor<2x8x8x8xf32>
    // CHECK: nn.gelu_backward %x, %x : tensor<2x8x8x8xf32>
    %a9 = nn.gelu_backward %x, %x : tensor<2x8x8x8xf32>
    // CHECK: nn.step %x : tensor<2x8x8x8xf32>
    %s1 = nn.step %x : tensor<2x8x8x8xf32>
    // CHECK: nn.log %x : tensor<2x8x8x8xf32>
    %s2 = nn.log %x : tensor<2x8x8x8xf32>
    // CHECK: nn.exp %x : tensor<2x8x8x8xf32>
    %s3 = nn.exp %x : tensor<2x8x8x8xf32>
    // CHECK: nn.max_pool_backward %p, %x kernel [2, 2] strides [2, 2] pads [0, 0, 0, 0] dilations [1, 1] ceil_mode false : (tensor<2x8x4x4xf32>, tensor<2x8x8x8xf32>) -> tensor<2x8x8x8xf32>
    %m1 = nn.max_pool_backward %p, %x kernel [2, 2] strides [2, 2] pads [0, 0, 0, 0] dilations [1, 1] ceil_mode false : (tensor<2x8x4x4xf32>, tensor<2x8x8x8xf32>) -> tensor<2x8x8x8xf32>
    // CHECK: nn.avg_pool_backward %p kernel [3, 3] strides [2, 2] pads [1, 1, 0, 0] dilations [1, 1] ceil_mode true count_include_pad false : (tensor<2x8x4x4xf32>) -> tensor<2x8x8x8xf32>
    %m2 = nn.avg_pool_backward %p kernel [3, 3] strides [2, 2] pads [1, 1, 0, 0] dilations [1, 1] ceil_mode true count_include_pad false : (tensor<2x8x4x4xf32>) -> tensor<2x8x8x8xf32>
    // CHECK: nn.global_avg_pool_backward %g : (tensor<2x8x1x1xf32>) -> tensor<2x8x8x8xf32>
    %m3 = nn.global_avg_pool_backward %g : (tensor<2x8x1x1xf32>) -> tensor<2x8x8x8xf32>
    // CHECK: nn.global_max_pool_backward %g, %x : (tensor<2x8x1x1xf32>, tensor<2x8x8x8xf32>) -> tensor<2x8x8x8xf32>
    %m4 = nn.global_max_pool_backward %g, %x : (tensor<2x8x1x1xf32>, tensor<2x8x8x8xf32>) -> tensor<2x8x8x8xf32>
    // CHECK: nn.softmax_cross_entropy %l, %t : (tensor<2x10xf32>, tensor<2x10xf32>) -> tensor<1xf32>
    %loss = nn.softmax_cross_entropy %l, %t : (tensor<2x10xf32>, tensor<2x10xf32>) -> tensor<1xf32>
    // CHECK: nn.softmax_cross_entropy_backward %l, %t : (tensor<2x10xf32>, tensor<2x10xf32>) -> tensor<2x10xf32>
    %dl = nn.softmax_cross_entropy_backward %l, %t : (tensor<2x10xf32>, tensor<2x10xf32>) -> tensor<2x10xf32>
    // CHECK: nn.mse_loss %l, %t
    %mse = nn.mse_loss %l, %t : (tensor<2x10xf32>, tensor<2x10xf32>) -> tensor<1xf32>
    // CHECK: nn.mse_loss_backward %l, %t
    %dm = nn.mse_loss_backward %l, %t : (tensor<2x10xf32>, tensor<2x10xf32>) -> tensor<2x10xf32>
    // CHECK: nn.sgd %w, %dw, %w lr 1.000000e-02 momentum 9.000000e-01 weight_decay 1.000000e-04 : (tensor<16x8x3x3xf32>, tensor<16x8x3x3xf32>, tensor<16x8x3x3xf32>) -> (tensor<16x8x3x3xf32>, tensor<16x8x3x3xf32>)
    %w1, %v1 = nn.sgd %w, %dw, %w lr 0.01 momentum 0.9 weight_decay 0.0001 : (tensor<16x8x3x3xf32>, tensor<16x8x3x3xf32>, tensor<16x8x3x3xf32>) -> (tensor<16x8x3x3xf32>, tensor<16x8x3x3xf32>)
    // CHECK: nn.sgd %c, %c lr 1.000000e-01 momentum 0.000000e+00 weight_decay 0.000000e+00 : (tensor<8xf32>, tensor<8xf32>) -> tensor<8xf32>
    %c1 = nn.sgd %c, %c lr 0.1 momentum 0.0 weight_decay 0.0 : (tensor<8xf32>, tensor<8xf32>) -> tensor<8xf32>
    func.return %loss : tensor<1xf32>
  }
}
