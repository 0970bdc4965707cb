// RUN: rm -rf %t && mkdir -p %t && cp %s %t/in.mlir
// RUN: python -c "import numpy as np; np.savez('%t/in.weights.npz', c=np.arange(8, dtype=np.float32).reshape(1, 8, 1, 1))"
// RUN: nncc-opt %t/in.mlir -p 'tile-layers{target=edge tile-order=naive}' -o %t/m.tile.mlir
// RUN: filecheck %s --input-file %t/m.tile.mlir
// RUN: nncc-opt %t/m.tile.mlir -p 'double-buffer,lower-to-isa' | filecheck %s --check-prefix=ISA
// tile-layers writes the streaming layers as nests too: an add whose second operand is a
// per-channel constant (a stride-0 view, loaded once per tile, broadcast on chip), a ReLU over
// the merged axes, a global average pooling (one reduction per row tile) and a softmax over 8
// classes (max, x - max, exp, sum, 1 / sum, product; the statistics after the result in the
// output tile). No nn op but the weight and the reshape (an alias) is left, and the nests lower.

builtin.module attributes {nn.weights = "in.weights.npz"} {
  func.func @main(%x: tensor<1x8x4x4xf32>) -> tensor<1x8xf32> {
    %c = nn.weight "c" : tensor<1x8x1x1xf32>
    %s = nn.add %x, %c {onnx_nodes = ["add"]} : (tensor<1x8x4x4xf32>, tensor<1x8x1x1xf32>) -> tensor<1x8x4x4xf32>
    %r = nn.relu %s {onnx_nodes = ["relu"]} : tensor<1x8x4x4xf32>
    %g = nn.global_avg_pool %r {onnx_nodes = ["pool"]} : (tensor<1x8x4x4xf32>) -> tensor<1x8x1x1xf32>
    %f = nn.reshape %g {onnx_nodes = ["flat"]} : (tensor<1x8x1x1xf32>) -> tensor<1x8xf32>
    %y = nn.softmax %f axis 1 {onnx_nodes = ["softmax"]} : tensor<1x8xf32>
    func.return %y : tensor<1x8xf32>
  }
}

// CHECK:      %c = nn.weight "c" : tensor<1x8x1x1xf32>
// CHECK-NEXT: %s = tile.nest "s" (%x, %c) -> tensor<1x8x4x4xf32> attributes {op = "nn.add", onnx_nodes = ["add"]} {
// CHECK:        %Zv = tile.view %Z offset 0 sizes [1, 8, 1] strides [0, 1, 0] : tensor<1x8x1x1xf32> -> tensor<1x8x1xf32>
// CHECK:        tile.for %[[D0:.*]][%[[T0:.*]]] = 0 to 1 step 1, %[[D1:.*]][%[[T1:.*]]] = 0 to 8 step 8, %[[D2:.*]][%[[T2:.*]]] = 0 to 16 step 16 cores 1 order naive {
// CHECK-NEXT:     tile.load %Xv[0, %[[D1]], %[[D2]]] [1, %[[T1]], %[[T2]]] -> %in0[0] dims [0, 1, 2]
// CHECK-NEXT:     tile.load %Zv[0, %[[D1]], 0] [1, %[[T1]], 1] -> %in1[0] dims [0, 1, 2]
// CHECK-NEXT:     tile.map add %in0[0] broadcast [0], %in1[0] broadcast [0, 2] -> %out[0] shape [%[[T0]], %[[T1]], %[[T2]]]
// CHECK-NEXT:     tile.store %out[0] -> %Yv[%[[D0]], %[[D1]], %[[D2]]] [%[[T0]], %[[T1]], %[[T2]]] dims [0, 1, 2]
// CHECK:      %r = tile.nest "r" (%s)
// CHECK:          tile.map relu
// CHECK:      %g = tile.nest "g" (%r) -> tensor<1x8x1x1xf32> attributes {op = "nn.global_avg_pool", onnx_nodes = ["pool"]} {
// CHECK:          tile.reduce mean %in[0] broadcast [1] -> %out{{.*}}[0] shape [%{{.*}}, 1, %{{.*}}]
// CHECK:      %f = nn.reshape %g
// CHECK-NEXT: %y = tile.nest "y" (%f) -> tensor<1x8xf32> attributes {op = "nn.softmax", onnx_nodes = ["softmax"]} {
// CHECK:          tile.reduce max %in{{.*}}[0] broadcast [1] -> %out{{.*}}[8] shape [1, 1, 8]
// CHECK-NEXT:     tile.map sub %in{{.*}}[0] broadcast [1], %out{{.*}}[8] broadcast [1, 2] -> %out{{.*}}[0] broadcast [1] shape [1, 1, 8]
// CHECK-NEXT:     tile.map exp
// CHECK-NEXT:     tile.reduce sum %out{{.*}}[0] broadcast [1] -> %out{{.*}}[9] shape [1, 1, 8]
// CHECK-NEXT:     tile.map recip %out{{.*}}[9] broadcast [0, 1] -> %out{{.*}}[9] broadcast [0, 1] shape [1, 1, 1]
// CHECK-NEXT:     tile.map mul
// CHECK:      func.return %y : tensor<1x8xf32>

// ISA:      isa.layer {name = "s", op = "nn.add"
// ISA:      isa.vadd
// ISA:      isa.layer {name = "r", op = "nn.relu"
// ISA:      isa.vact {{.*}}func = "relu"
// ISA:      isa.layer {name = "g", op = "nn.global_avg_pool"
// ISA:      isa.vred {{.*}}func = "mean"
// ISA:      isa.layer {name = "y", op = "nn.softmax"
// ISA:      isa.vred {{.*}}func = "max"
// ISA:      isa.vsub
// ISA:      isa.vact {{.*}}func = "exp"
// ISA:      isa.vred {{.*}}func = "sum"
// ISA:      isa.vact {{.*}}func = "recip"
// ISA:      isa.vmul
