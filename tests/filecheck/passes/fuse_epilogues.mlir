// RUN: nncc-opt %s -p fuse-epilogues | filecheck %s
// fuse-epilogues: conv2d/gemm -> [residual add] -> [activation] becomes one fused op.

builtin.module {
  // ResNet's basic block after BN folding: conv + add + relu is one op; onnx_nodes in order.
  // CHECK-LABEL: func.func @resnet_block
  // CHECK-NEXT:    %[[Y:.*]] = fused.conv2d %x, %w, %b residual %x strides [1, 1] pads [1, 1, 1, 1] dilations [1, 1] group 1 act relu {onnx_nodes = ["conv2", "bn2", "add", "relu"]} : (tensor<1x4x8x8xf32>, tensor<4x4x3x3xf32>, tensor<4xf32>) -> tensor<1x4x8x8xf32>
  // CHECK-NEXT:    func.return %[[Y]]
  func.func @resnet_block(%x: tensor<1x4x8x8xf32>, %w: tensor<4x4x3x3xf32>, %b: tensor<4xf32>) -> tensor<1x4x8x8xf32> {
    %c = nn.conv2d %x, %w, %b strides [1, 1] pads [1, 1, 1, 1] dilations [1, 1] group 1 {onnx_nodes = ["conv2", "bn2"]} : (tensor<1x4x8x8xf32>, tensor<4x4x3x3xf32>, tensor<4xf32>) -> tensor<1x4x8x8xf32>
    %a = nn.add %c, %x {onnx_nodes = ["add"]} : (tensor<1x4x8x8xf32>, tensor<1x4x8x8xf32>) -> tensor<1x4x8x8xf32>
    %y = nn.relu %a {onnx_nodes = ["relu"]} : tensor<1x4x8x8xf32>
    func.return %y : tensor<1x4x8x8xf32>
  }

  // Both add operands are convs: the later one takes the add, the earlier one is its residual.
  // CHECK-LABEL: func.func @downsample_block
  // CHECK-NEXT:    %[[D:.*]] = fused.conv2d %x, %w strides [1, 1] pads [0, 0, 0, 0] dilations [1, 1] group 1 act none {onnx_nodes = ["downsample"]}
  // CHECK-NEXT:    %[[C:.*]] = fused.conv2d %x, %w residual %[[D]] strides [1, 1] pads [0, 0, 0, 0] dilations [1, 1] group 1 act none {onnx_nodes = ["conv2", "add"]}
  // CHECK-NEXT:    func.return %[[C]]
  func.func @downsample_block(%x: tensor<1x4x8x8xf32>, %w: tensor<4x4x1x1xf32>) -> tensor<1x4x8x8xf32> {
    %d = nn.conv2d %x, %w strides [1, 1] pads [0, 0, 0, 0] dilations [1, 1] group 1 {onnx_nodes = ["downsample"]} : (tensor<1x4x8x8xf32>, tensor<4x4x1x1xf32>) -> tensor<1x4x8x8xf32>
    %c = nn.conv2d %x, %w strides [1, 1] pads [0, 0, 0, 0] dilations [1, 1] group 1 {onnx_nodes = ["conv2"]} : (tensor<1x4x8x8xf32>, tensor<4x4x1x1xf32>) -> tensor<1x4x8x8xf32>
    %a = nn.add %d, %c {onnx_nodes = ["add"]} : (tensor<1x4x8x8xf32>, tensor<1x4x8x8xf32>) -> tensor<1x4x8x8xf32>
    func.return %a : tensor<1x4x8x8xf32>
  }

  // MobileNetV2's projection: no activation, the conv is the add's right operand.
  // CHECK-LABEL: func.func @mobilenet_projection
  // CHECK-NEXT:    %[[Y:.*]] = fused.conv2d %x, %w residual %x strides [1, 1] pads [0, 0, 0, 0] dilations [1, 1] group 1 act none {onnx_nodes = ["project", "add"]}
  // CHECK-NEXT:    func.return %[[Y]]
  func.func @mobilenet_projection(%x: tensor<1x4x8x8xf32>, %w: tensor<4x4x1x1xf32>) -> tensor<1x4x8x8xf32> {
    %c = nn.conv2d %x, %w strides [1, 1] pads [0, 0, 0, 0] dilations [1, 1] group 1 {onnx_nodes = ["project"]} : (tensor<1x4x8x8xf32>, tensor<4x4x1x1xf32>) -> tensor<1x4x8x8xf32>
    %a = nn.add %x, %c {onnx_nodes = ["add"]} : (tensor<1x4x8x8xf32>, tensor<1x4x8x8xf32>) -> tensor<1x4x8x8xf32>
    func.return %a : tensor<1x4x8x8xf32>
  }

  // CHECK-LABEL: func.func @relu6
  // CHECK-NEXT:    %[[Y:.*]] = fused.conv2d %x, %w strides [1, 1] pads [1, 1, 1, 1] dilations [1, 1] group 4 act clip min 0.000000e+00 max 6.000000e+00 {onnx_nodes = ["dw", "clip"]}
  // CHECK-NEXT:    func.return %[[Y]]
  func.func @relu6(%x: tensor<1x4x8x8xf32>, %w: tensor<4x1x3x3xf32>) -> tensor<1x4x8x8xf32> {
    %c = nn.conv2d %x, %w strides [1, 1] pads [1, 1, 1, 1] dilations [1, 1] group 4 {onnx_nodes = ["dw"]} : (tensor<1x4x8x8xf32>, tensor<4x1x3x3xf32>) -> tensor<1x4x8x8xf32>
    %y = nn.clip %c min 0.0 max 6.0 {onnx_nodes = ["clip"]} : tensor<1x4x8x8xf32>
    func.return %y : tensor<1x4x8x8xf32>
  }

  // An infinite clip bound becomes an absent property; a clip without bounds is act none.
  // CHECK-LABEL: func.func @one_sided_clips
  // CHECK-NEXT:    fused.conv2d {{.*}} act clip max 6.000000e+00 :
  // CHECK-NEXT:    fused.conv2d {{.*}} act clip min -1.000000e+00 :
  // CHECK-NEXT:    fused.conv2d {{.*}} act none :
  // CHECK-NEXT:    func.return
  func.func @one_sided_clips(%x: tensor<1x4x8x8xf32>, %w: tensor<4x4x1x1xf32>) -> (tensor<1x4x8x8xf32>, tensor<1x4x8x8xf32>, tensor<1x4x8x8xf32>) {
    %c1 = nn.conv2d %x, %w strides [1, 1] pads [0, 0, 0, 0] dilations [1, 1] group 1 : (tensor<1x4x8x8xf32>, tensor<4x4x1x1xf32>) -> tensor<1x4x8x8xf32>
    %y1 = nn.clip %c1 min 0xFFF0000000000000 max 6.0 : tensor<1x4x8x8xf32>
    %c2 = nn.conv2d %x, %w strides [1, 1] pads [0, 0, 0, 0] dilations [1, 1] group 1 : (tensor<1x4x8x8xf32>, tensor<4x4x1x1xf32>) -> tensor<1x4x8x8xf32>
    %y2 = nn.clip %c2 min -1.0 max 0x7FF0000000000000 : tensor<1x4x8x8xf32>
    %c3 = nn.conv2d %x, %w strides [1, 1] pads [0, 0, 0, 0] dilations [1, 1] group 1 : (tensor<1x4x8x8xf32>, tensor<4x4x1x1xf32>) -> tensor<1x4x8x8xf32>
    %y3 = nn.clip %c3 min 0xFFF0000000000000 max 0x7FF0000000000000 : tensor<1x4x8x8xf32>
    func.return %y1, %y2, %y3 : tensor<1x4x8x8xf32>, tensor<1x4x8x8xf32>, tensor<1x4x8x8xf32>
  }

  // CHECK-LABEL: func.func @other_activations
  // CHECK-NEXT:    fused.conv2d {{.*}} act hard_swish :
  // CHECK-NEXT:    fused.conv2d {{.*}} act sigmoid :
  // CHECK-NEXT:    fused.gemm %a, %fc, %bias trans_a false trans_b true alpha 1.000000e+00 beta 1.000000e+00 act leaky_relu alpha 1.000000e-01 {onnx_nodes = ["fc1", "lrelu"]}
  // CHECK-NEXT:    fused.gemm %a, %fc trans_a false trans_b true alpha 5.000000e-01 beta 1.000000e+00 act hard_sigmoid alpha 2.000000e-01 beta 5.000000e-01 :
  // CHECK-NEXT:    func.return
  func.func @other_activations(%x: tensor<1x4x8x8xf32>, %w: tensor<4x4x1x1xf32>, %a: tensor<2x8xf32>, %fc: tensor<3x8xf32>, %bias: tensor<3xf32>) -> (tensor<1x4x8x8xf32>, tensor<1x4x8x8xf32>, tensor<2x3xf32>, tensor<2x3xf32>) {
    %c1 = nn.conv2d %x, %w strides [1, 1] pads [0, 0, 0, 0] dilations [1, 1] group 1 : (tensor<1x4x8x8xf32>, tensor<4x4x1x1xf32>) -> tensor<1x4x8x8xf32>
    %y1 = nn.hard_swish %c1 : tensor<1x4x8x8xf32>
    %c2 = nn.conv2d %x, %w strides [1, 1] pads [0, 0, 0, 0] dilations [1, 1] group 1 : (tensor<1x4x8x8xf32>, tensor<4x4x1x1xf32>) -> tensor<1x4x8x8xf32>
    %y2 = nn.sigmoid %c2 : tensor<1x4x8x8xf32>
    %g1 = nn.gemm %a, %fc, %bias trans_a false trans_b true alpha 1.0 beta 1.0 {onnx_nodes = ["fc1"]} : (tensor<2x8xf32>, tensor<3x8xf32>, tensor<3xf32>) -> tensor<2x3xf32>
    %y3 = nn.leaky_relu %g1 alpha 0.1 {onnx_nodes = ["lrelu"]} : tensor<2x3xf32>
    %g2 = nn.gemm %a, %fc trans_a false trans_b true alpha 0.5 beta 1.0 : (tensor<2x8xf32>, tensor<3x8xf32>) -> tensor<2x3xf32>
    %y4 = nn.hard_sigmoid %g2 alpha 0.2 beta 0.5 : tensor<2x3xf32>
    func.return %y1, %y2, %y3, %y4 : tensor<1x4x8x8xf32>, tensor<1x4x8x8xf32>, tensor<2x3xf32>, tensor<2x3xf32>
  }

  // CHECK-LABEL: func.func @gemm_residual
  // CHECK-NEXT:    %[[G:.*]] = fused.gemm %a, %fc residual %a trans_a false trans_b false alpha 1.000000e+00 beta 1.000000e+00 act relu :
  // CHECK-NEXT:    func.return %[[G]]
  func.func @gemm_residual(%a: tensor<2x8xf32>, %fc: tensor<8x8xf32>) -> tensor<2x8xf32> {
    %g = nn.gemm %a, %fc trans_a false trans_b false alpha 1.0 beta 1.0 : (tensor<2x8xf32>, tensor<8x8xf32>) -> tensor<2x8xf32>
    %s = nn.add %a, %g : (tensor<2x8xf32>, tensor<2x8xf32>) -> tensor<2x8xf32>
    %y = nn.relu %s : tensor<2x8xf32>
    func.return %y : tensor<2x8xf32>
  }

  // A broadcasting add is not a residual.
  // CHECK-LABEL: func.func @broadcast_add
  // CHECK-NEXT:    %[[C:.*]] = fused.conv2d %x, %w strides [1, 1] pads [0, 0, 0, 0] dilations [1, 1] group 1 act none :
  // CHECK-NEXT:    nn.add %[[C]], %bias
  func.func @broadcast_add(%x: tensor<1x4x8x8xf32>, %w: tensor<4x4x1x1xf32>, %bias: tensor<1x4x1x1xf32>) -> tensor<1x4x8x8xf32> {
    %c = nn.conv2d %x, %w strides [1, 1] pads [0, 0, 0, 0] dilations [1, 1] group 1 : (tensor<1x4x8x8xf32>, tensor<4x4x1x1xf32>) -> tensor<1x4x8x8xf32>
    %a = nn.add %c, %bias : (tensor<1x4x8x8xf32>, tensor<1x4x1x1xf32>) -> tensor<1x4x8x8xf32>
    func.return %a : tensor<1x4x8x8xf32>
  }

  // act(conv) + x is not act(conv + x): the add (and the relu after it) stay.
  // CHECK-LABEL: func.func @add_after_activation
  // CHECK-NEXT:    %[[C:.*]] = fused.conv2d {{.*}} act relu :
  // CHECK-NEXT:    %[[A:.*]] = nn.add %[[C]], %x
  // CHECK-NEXT:    nn.relu %[[A]]
  func.func @add_after_activation(%x: tensor<1x4x8x8xf32>, %w: tensor<4x4x1x1xf32>) -> tensor<1x4x8x8xf32> {
    %c = nn.conv2d %x, %w strides [1, 1] pads [0, 0, 0, 0] dilations [1, 1] group 1 : (tensor<1x4x8x8xf32>, tensor<4x4x1x1xf32>) -> tensor<1x4x8x8xf32>
    %r = nn.relu %c : tensor<1x4x8x8xf32>
    %a = nn.add %r, %x : (tensor<1x4x8x8xf32>, tensor<1x4x8x8xf32>) -> tensor<1x4x8x8xf32>
    %y = nn.relu %a : tensor<1x4x8x8xf32>
    func.return %y : tensor<1x4x8x8xf32>
  }

  // One activation per epilogue: the second one stays.
  // CHECK-LABEL: func.func @two_activations
  // CHECK-NEXT:    %[[C:.*]] = fused.conv2d {{.*}} act relu :
  // CHECK-NEXT:    nn.sigmoid %[[C]]
  func.func @two_activations(%x: tensor<1x4x8x8xf32>, %w: tensor<4x4x1x1xf32>) -> tensor<1x4x8x8xf32> {
    %c = nn.conv2d %x, %w strides [1, 1] pads [0, 0, 0, 0] dilations [1, 1] group 1 : (tensor<1x4x8x8xf32>, tensor<4x4x1x1xf32>) -> tensor<1x4x8x8xf32>
    %r = nn.relu %c : tensor<1x4x8x8xf32>
    %s = nn.sigmoid %r : tensor<1x4x8x8xf32>
    func.return %s : tensor<1x4x8x8xf32>
  }

  // The conv result has another user: it must be written out unactivated.
  // CHECK-LABEL: func.func @shared_result
  // CHECK-NEXT:    %[[C:.*]] = fused.conv2d {{.*}} act none :
  // CHECK-NEXT:    %[[R:.*]] = nn.relu %[[C]]
  // CHECK-NEXT:    nn.mul %[[C]], %[[R]]
  func.func @shared_result(%x: tensor<1x4x8x8xf32>, %w: tensor<4x4x1x1xf32>) -> tensor<1x4x8x8xf32> {
    %c = nn.conv2d %x, %w strides [1, 1] pads [0, 0, 0, 0] dilations [1, 1] group 1 : (tensor<1x4x8x8xf32>, tensor<4x4x1x1xf32>) -> tensor<1x4x8x8xf32>
    %r = nn.relu %c : tensor<1x4x8x8xf32>
    %m = nn.mul %c, %r : (tensor<1x4x8x8xf32>, tensor<1x4x8x8xf32>) -> tensor<1x4x8x8xf32>
    func.return %m : tensor<1x4x8x8xf32>
  }

  // Only conv2d and gemm have epilogues.
  // CHECK-LABEL: func.func @after_pooling
  // CHECK-NEXT:    %[[P:.*]] = nn.max_pool %x
  // CHECK-NEXT:    nn.relu %[[P]]
  func.func @after_pooling(%x: tensor<1x4x8x8xf32>) -> tensor<1x4x8x8xf32> {
    %p = nn.max_pool %x kernel [1, 1] strides [1, 1] pads [0, 0, 0, 0] dilations [1, 1] ceil_mode false : (tensor<1x4x8x8xf32>) -> tensor<1x4x8x8xf32>
    %r = nn.relu %p : tensor<1x4x8x8xf32>
    func.return %r : tensor<1x4x8x8xf32>
  }
}
