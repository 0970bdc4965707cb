// RUN: python %S/make_reduce_model.py %t
// RUN: nncc %t.keep.onnx --emit=nn | filecheck %s --check-prefix=KEEP
// RUN: nncc %t.drop.onnx --emit=nn | filecheck %s --check-prefix=DROP
// RUN: nncc %t.legacy.onnx --emit=nn | filecheck %s --check-prefix=DROP
// RUN: nncc %t.channel.onnx --emit=nn | filecheck %s --check-prefix=CHANNEL

// ONNX ReduceMean/ReduceMax import onto nn.global_avg_pool / nn.global_max_pool (the ONNX
// models are written by make_reduce_model.py; the axes input is folded away at import).

// PyTorch's dynamo exporter (opset 18): ReduceMean(x, axes=[-2, -1]) keepdims=1, then Flatten.
// KEEP:      func.func @main(%x: tensor<1x4x3x3xf32>) -> tensor<1x4xf32> {
// KEEP-NEXT:   %mean = nn.global_avg_pool %x {onnx_nodes = ["mean"]} : (tensor<1x4x3x3xf32>) -> tensor<1x4x1x1xf32>
// KEEP-NEXT:   %y = nn.reshape %mean {onnx_nodes = ["flatten"]} : (tensor<1x4x1x1xf32>) -> tensor<1x4xf32>
// KEEP-NEXT:   func.return %y : tensor<1x4xf32>

// keepdims=0 (dynamo, axes [2, 3]; legacy opset 13, axes attribute): the pooling and a reshape,
// both of the ReduceMean node.
// DROP:      func.func @main(%x: tensor<1x4x3x3xf32>) -> tensor<1x4xf32> {
// DROP-NEXT:   %[[P:.*]] = nn.global_avg_pool %x {onnx_nodes = ["mean"]} : (tensor<1x4x3x3xf32>) -> tensor<1x4x1x1xf32>
// DROP-NEXT:   %y = nn.reshape %[[P]] {onnx_nodes = ["mean"]} : (tensor<1x4x1x1xf32>) -> tensor<1x4xf32>
// DROP-NEXT:   func.return %y : tensor<1x4xf32>

// Another axis: the reduced axis is moved last (nn.transpose) and the tensor viewed as 1 x K x R.
// CHANNEL:      func.func @main(%x: tensor<1x4x3x3xf32>) -> tensor<1x1x3x3xf32> {
// CHANNEL-NEXT:   %[[V:.*]] = nn.reshape %x {onnx_nodes = ["max"]} : (tensor<1x4x3x3xf32>) -> tensor<1x4x9xf32>
// CHANNEL-NEXT:   %[[T:.*]] = nn.transpose %[[V]] perm [0, 2, 1] {onnx_nodes = ["max"]} : (tensor<1x4x9xf32>) -> tensor<1x9x4xf32>
// CHANNEL-NEXT:   %[[P:.*]] = nn.global_max_pool %[[T]] {onnx_nodes = ["max"]} : (tensor<1x9x4xf32>) -> tensor<1x9x1xf32>
// CHANNEL-NEXT:   %y = nn.reshape %[[P]] {onnx_nodes = ["max"]} : (tensor<1x9x1xf32>) -> tensor<1x1x3x3xf32>
// CHANNEL-NEXT:   func.return %y : tensor<1x1x3x3xf32>
