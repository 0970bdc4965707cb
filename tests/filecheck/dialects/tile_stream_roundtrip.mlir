// RUN: nncc-opt %s | nncc-opt | filecheck %s
// RUN: xdsl-opt %s --print-op-generic | nncc-opt | filecheck %s
// RUN: sed 's/tile.map mul %in0/tile.map frob %in0/' %s | not nncc-opt 2>&1 | filecheck %s --check-prefix=FUNC
// RUN: sed 's/tile.map clip \[0.0, 6.0\] %out\[0\] ->/tile.map clip [0.0, 6.0] %out[0], %in0[0] ->/' %s | not nncc-opt 2>&1 | filecheck %s --check-prefix=ARITY
// RUN: sed 's/tile.map mul %in0\[0\], %in1\[0\]/tile.map mul [2.0] %in0[0], %in1[0]/' %s | not nncc-opt 2>&1 | filecheck %s --check-prefix=PARAMS
// RUN: sed 's/offset 0 sizes \[1, 64, 1\]/offset 1 sizes [1, 64, 1]/' %s | not nncc-opt 2>&1 | filecheck %s --check-prefix=VIEW
// RUN: sed 's/broadcast \[0, 2\] -> %out/broadcast [0, 3] -> %out/' %s | not nncc-opt 2>&1 | filecheck %s --check-prefix=DIM
// RUN: sed "s/window \[1, 5\] steps \[0, /window [1, 5] steps [/" %s | not nncc-opt 2>&1 | filecheck %s --check-prefix=STEPS
// RUN: sed 's/tile.reduce max %out\[0\] broadcast \[1\]/tile.reduce avg %out[0] broadcast [1]/' %s | not nncc-opt 2>&1 | filecheck %s --check-prefix=REDUCE
// The streaming ops print in the tile dialect's custom form and parse back to the same IR, also
// from the generic form: strided DRAM views (a stride-0 per-channel parameter), elementwise maps
// with broadcast views, parameters and a last-iteration condition, row reductions (accumulated
// over a loop, repeated over rows with explicit strides) and a window sum. Bad ones are verifier
// errors naming the op.

builtin.module {
  func.func @main(%x: tensor<2x64x56x56xf32>, %s: tensor<1x64x1x1xf32>) -> tensor<2x64x56x56xf32> {
    %y = tile.nest "bn" (%x, %s) -> tensor<2x64x56x56xf32> attributes {op = "nn.mul"} {
    ^bb0(%X: tensor<2x64x56x56xf32>, %S: tensor<1x64x1x1xf32>, %Y: tensor<2x64x56x56xf32>):
      %Xv = tile.view %X offset 0 sizes [2, 64, 3136] strides [200704, 3136, 1] : tensor<2x64x56x56xf32> -> tensor<2x64x3136xf32>
      %Sv = tile.view %S offset 0 sizes [1, 64, 1] strides [0, 1, 0] : tensor<1x64x1x1xf32> -> tensor<1x64x1xf32>
      %Yv = tile.view %Y offset 0 sizes [2, 64, 3136] strides [200704, 3136, 1] : tensor<2x64x56x56xf32> -> tensor<2x64x3136xf32>
      %in0 = tile.buffer "input" slots 1 : memref<1x4x3136xf32, "BUF">
      %in1 = tile.buffer "input" slots 1 : memref<1x4x1xf32, "BUF">
      %out = tile.buffer "output" slots 1 : memref<1x4x3136xf32, "BUF">
      tile.for %a[%ta] = 0 to 2 step 1, %b[%tb] = 0 to 64 step 4, %c[%tc] = 0 to 3136 step 3136 cores 1 order naive {
        tile.load %Xv[%a, %b, %c] [%ta, %tb, %tc] -> %in0[0] dims [0, 1, 2]
        tile.load %Sv[0, %b, 0] [1, %tb, 1] -> %in1[0] dims [0, 1, 2]
        tile.map mul %in0[0], %in1[0] broadcast [0, 2] -> %out[0] shape [%ta, %tb, %tc]
        tile.map clip [0.0, 6.0] %out[0] -> %out[0] shape [%ta, %tb, %tc] last %c
        tile.reduce max %out[0] broadcast [1] -> %in1[0] shape [%ta, 1, %tc] reduce %c
        tile.reduce sum %out[0] strides [1, 0, %tc] -> %in1[0] shape [%ta, 1, %tc] repeat %tb steps [%tc * 4, 4] reduce %c
        tile.reduce sum %out[%tc * 2] broadcast [0] -> %out[0] broadcast [0] shape [1, %tb, %tc] window [1, 5] steps [0, %tc]
        tile.store %out[0] -> %Yv[%a, %b, %c] [%ta, %tb, %tc] dims [0, 1, 2]
      }
    } : (tensor<2x64x56x56xf32>, tensor<1x64x1x1xf32>) -> tensor<2x64x56x56xf32>
    func.return %y : tensor<2x64x56x56xf32>
  }
}

// CHECK:      %Xv = tile.view %X offset 0 sizes [2, 64, 3136] strides [200704, 3136, 1] : tensor<2x64x56x56xf32> -> tensor<2x64x3136xf32>
// CHECK-NEXT: %Sv = tile.view %S offset 0 sizes [1, 64, 1] strides [0, 1, 0] : tensor<1x64x1x1xf32> -> tensor<1x64x1xf32>
// CHECK:      tile.for %[[A:.*]][%[[TA:.*]]] = 0 to 2 step 1, %[[B:.*]][%[[TB:.*]]] = 0 to 64 step 4, %[[C:.*]][%[[TC:.*]]] = 0 to 3136 step 3136 cores 1 order naive {
// CHECK:        tile.map mul %in0[0], %in1[0] broadcast [0, 2] -> %out[0] shape [%[[TA]], %[[TB]], %[[TC]]]
// CHECK-NEXT:   tile.map clip [0.0, 6.0] %out[0] -> %out[0] shape [%[[TA]], %[[TB]], %[[TC]]] last %[[C]]
// CHECK-NEXT:   tile.reduce max %out[0] broadcast [1] -> %in1[0] shape [%[[TA]], 1, %[[TC]]] reduce %[[C]]
// CHECK-NEXT:   tile.reduce sum %out[0] strides [1, 0, %[[TC]]] -> %in1[0] shape [%[[TA]], 1, %[[TC]]] repeat %[[TB]] steps [%[[TC]] * 4, 4] reduce %[[C]]
// CHECK-NEXT:   tile.reduce sum %out[%[[TC]] * 2] broadcast [0] -> %out[0] broadcast [0] shape [1, %[[TB]], %[[TC]]] window [1, 5] steps [0, %[[TC]]]
// CHECK-NEXT:   tile.store %out[0] -> %Yv[%[[A]], %[[B]], %[[C]]] [%[[TA]], %[[TB]], %[[TC]]] dims [0, 1, 2]

// FUNC: tile.map: unknown function 'frob'
// ARITY: tile.map: clip takes 1 input view(s) and an output view, 3 views given
// PARAMS: tile.map: mul takes at most 0 parameters
// VIEW: tile.view: elements 1 to 64 of a tensor of 64
// DIM: broadcast dimension 3 of a 3-D view
// STEPS: tile.reduce: 5 shape, step and repeat expressions expected
// REDUCE: tile.reduce: func must be one of sum, max, mean, not 'avg'
