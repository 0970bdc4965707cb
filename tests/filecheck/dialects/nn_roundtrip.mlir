// RUN: nncc-opt %s | nncc-opt | filecheck %s
// Every nn op prints in its custom form and parses back to the same IR.

builtin.module {
  func.func @main(%x: tensor<1x3x8x8xf32>) -> tensor<1x4xf32> {
    %w = nn.weight "c1.w" : tensor<4x3x3x3xf32>
    %b = nn.weight "c1.b" : tensor<4xf32>
    %s = nn.weight "s" : tensor<4xf32>
    %fc = nn.weight "fc" : tensor<4x8xf32>
    %y = nn.conv2d %x, %w, %b strides [1, 1] pads [1, 1, 1, 1] dilations [1, 1] group 1 {onnx_nodes = ["c1"]} : (tensor<1x3x8x8xf32>, tensor<4x3x3x3xf32>, tensor<4xf32>) -> tensor<1x4x8x8xf32>
    %bn = nn.batch_norm %y, %s, %s, %s, %s epsilon 1.0e-05 : (tensor<1x4x8x8xf32>, tensor<4xf32>, tensor<4xf32>, tensor<4xf32>, tensor<4xf32>) -> tensor<1x4x8x8xf32>
    %r6 = nn.clip %bn min 0.0 max 6.0 : tensor<1x4x8x8xf32>
    %lr = nn.leaky_relu %r6 alpha 0.01 : tensor<1x4x8x8xf32>
    %hs = nn.hard_sigmoid %lr alpha 0.2 beta 0.5 : tensor<1x4x8x8xf32>
    %hw = nn.hard_swish %hs : tensor<1x4x8x8xf32>
    %sg = nn.sigmoid %hw : tensor<1x4x8x8xf32>
    %ln = nn.lrn %sg size 3 alpha 1.0e-04 beta 0.75 bias 1.0 : tensor<1x4x8x8xf32>
    %mp = nn.max_pool %ln kernel [3, 3] strides [2, 2] pads [1, 1, 1, 1] dilations [1, 1] ceil_mode false : (tensor<1x4x8x8xf32>) -> tensor<1x4x4x4xf32>
    %ap = nn.avg_pool %mp kernel [2, 2] strides [2, 2] pads [0, 0, 0, 0] dilations [1, 1] ceil_mode true count_include_pad false : (tensor<1x4x4x4xf32>) -> tensor<1x4x2x2xf32>
    %gm = nn.global_max_pool %ap : (tensor<1x4x2x2xf32>) -> tensor<1x4x1x1xf32>
    %ga = nn.global_avg_pool %gm : (tensor<1x4x1x1xf32>) -> tensor<1x4x1x1xf32>
    %fl = nn.reshape %ga : (tensor<1x4x1x1xf32>) -> tensor<1x4xf32>
    %tr = nn.transpose %fl perm [1, 0] : (tensor<1x4xf32>) -> tensor<4x1xf32>
    %cc = nn.concat %fl, %fl axis 1 : (tensor<1x4xf32>, tensor<1x4xf32>) -> tensor<1x8xf32>
    %g = nn.gemm %cc, %fc trans_a false trans_b true alpha 1.0 beta 1.0 : (tensor<1x8xf32>, tensor<4x8xf32>) -> tensor<1x4xf32>
    %mm = nn.matmul %g, %tr : (tensor<1x4xf32>, tensor<4x1xf32>) -> tensor<1x1xf32>
    %sm = nn.softmax %g axis 1 : tensor<1x4xf32>
    %a = nn.add %sm, %b : (tensor<1x4xf32>, tensor<4xf32>) -> tensor<1x4xf32>
    %sb = nn.sub %a, %mm : (tensor<1x4xf32>, tensor<1x1xf32>) -> tensor<1x4xf32>
    %ml = nn.mul %sb, %a : (tensor<1x4xf32>, tensor<1x4xf32>) -> tensor<1x4xf32>
    %dv = nn.div %ml, %a : (tensor<1x4xf32>, tensor<1x4xf32>) -> tensor<1x4xf32>
    %rl = nn.relu %dv : tensor<1x4xf32>
    func.return %rl : tensor<1x4xf32>
  }
}

// CHECK-LABEL: func.func @main
// CHECK:      %[[W:.*]] = nn.weight "c1.w" : tensor<4x3x3x3xf32>
// CHECK:      %[[B:.*]] = nn.weight "c1.b" : tensor<4xf32>
// CHECK:      %[[Y:.*]] = nn.conv2d %x, %[[W]], %[[B]] strides [1, 1] pads [1, 1, 1, 1] dilations [1, 1] group 1 {onnx_nodes = ["c1"]}
// CHECK:      nn.batch_norm %[[Y]], {{.*}} epsilon 1.000000e-05
// CHECK:      nn.clip %{{.*}} min 0.000000e+00 max 6.000000e+00 : tensor<1x4x8x8xf32>
// CHECK:      nn.leaky_relu %{{.*}} alpha 1.000000e-02
// CHECK:      nn.hard_sigmoid %{{.*}} alpha 2.000000e-01 beta 5.000000e-01
// CHECK:      nn.hard_swish
// CHECK:      nn.sigmoid
// CHECK:      nn.lrn %{{.*}} size 3 alpha 1.000000e-04 beta 7.500000e-01 bias 1.000000e+00
// CHECK:      nn.max_pool %{{.*}} kernel [3, 3] strides [2, 2] pads [1, 1, 1, 1] dilations [1, 1] ceil_mode false
// CHECK:      nn.avg_pool %{{.*}} ceil_mode true count_include_pad false
// CHECK:      nn.global_max_pool
// CHECK:      nn.global_avg_pool
// CHECK:      nn.reshape %{{.*}} : (tensor<1x4x1x1xf32>) -> tensor<1x4xf32>
// CHECK:      nn.transpose %{{.*}} perm [1, 0]
// CHECK:      nn.concat %[[FL:.*]], %[[FL]] axis 1
// CHECK:      nn.gemm %{{.*}} trans_a false trans_b true alpha 1.000000e+00 beta 1.000000e+00
// CHECK:      nn.matmul
// CHECK:      nn.softmax %{{.*}} axis 1 : tensor<1x4xf32>
// CHECK:      nn.add
// CHECK:      nn.sub
// CHECK:      nn.mul
// CHECK:      nn.div
// CHECK:      nn.relu
