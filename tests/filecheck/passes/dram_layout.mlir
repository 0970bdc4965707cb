// RUN: nncc-opt %s -p 'dram-layout{target=vector}' | filecheck %s
// RUN: sed 's/"AM"/"BUF"/' %s | nncc-opt -p 'dram-layout{target=edge}' | filecheck %s --check-prefix=EDGE
// dram-layout stores a feature map NHWC in DRAM when its producer nest only stores into it, every
// consumer nest only loads from it, and their boxes (here 7 rows x 4 columns x 16 channels: NCHW,
// 16-byte runs; NHWC, 256-byte ones) take the DRAM bus less time so: each of them then sees it
// through one channels-last view. %a (read by two load-only nests) is NHWC; %x (the program's input), %b and %c (its outputs) and %d
// (read through a tile.view by a streaming nest) stay NCHW. On edge (DRAM not timed in bursts)
// nothing changes.

// CHECK:      %a = tile.nest "a" (%x)
// CHECK-NEXT: ^bb0(%X: tensor<1x16x7x7xf32>, %Y: tensor<1x16x7x7xf32>):
// CHECK-NEXT:   %Yn = tile.view %Y offset 0 sizes [1, 16, 7, 7] strides [784, 1, 112, 16] : tensor<1x16x7x7xf32> -> tensor<1x16x7x7xf32>
// CHECK:        tile.load %X[0, 0, 0, 0] [1, 16, 7, 4] -> %buf[0] dims [2, 3, 1]
// CHECK-NEXT:   tile.store %buf[0] -> %Yn[0, 0, 0, 0] [1, 16, 7, 4] dims [2, 3, 1]
// CHECK:      %b = tile.nest "b" (%a)
// CHECK-NEXT: ^bb0(%X_1: tensor<1x16x7x7xf32>, %Y_1: tensor<1x16x7x7xf32>):
// CHECK-NEXT:   %Xn = tile.view %X_1 offset 0 sizes [1, 16, 7, 7] strides [784, 1, 112, 16]
// CHECK:        tile.load %Xn[0, 0, 0, 0] [1, 16, 7, 4] -> %buf_1[0] dims [2, 3, 1]
// CHECK-NEXT:   tile.store %buf_1[0] -> %Y_1[0, 0, 0, 0] [1, 16, 7, 4] dims [2, 3, 1]
// CHECK:      %c = tile.nest "c" (%a)
// CHECK-NEXT: ^bb0(%X_2: tensor<1x16x7x7xf32>, %Y_2: tensor<1x16x7x7xf32>):
// CHECK-NEXT:   %Xn_1 = tile.view %X_2 offset 0 sizes [1, 16, 7, 7] strides [784, 1, 112, 16]
// CHECK:        tile.store %buf_2[0] -> %Y_2[0, 0, 0, 0]
// CHECK:      %d = tile.nest "d" (%x)
// CHECK-NEXT: ^bb0(%X_3: tensor<1x16x7x7xf32>, %Y_3: tensor<1x16x7x7xf32>):
// CHECK-NEXT:   %buf_3 = tile.buffer
// CHECK-NEXT:   tile.load %X_3[0, 0, 0, 0]
// CHECK-NEXT:   tile.store %buf_3[0] -> %Y_3[0, 0, 0, 0]
// CHECK:      %v = tile.nest "v" (%d)
// CHECK-NEXT: ^bb0(%X_4: tensor<1x16x7x7xf32>, %Y_4: tensor<1x16x7x7xf32>):
// CHECK-NEXT:   %buf_4 = tile.buffer
// CHECK-NEXT:   %Xv = tile.view %X_4 offset 0 sizes [1, 16, 49] strides [0, 49, 1]

// EDGE:     %a = tile.nest "a" (%x)
// EDGE-NOT: strides [784, 1, 112, 16]
// EDGE:     func.return

builtin.module {
  func.func @main(%x: tensor<1x16x7x7xf32>) -> (tensor<1x16x7x7xf32>, tensor<1x16x7x7xf32>, tensor<1x16x7x7xf32>) {
    %a = tile.nest "a" (%x) -> tensor<1x16x7x7xf32> attributes {op = "nn.copy"} {
    ^bb0(%X: tensor<1x16x7x7xf32>, %Y: tensor<1x16x7x7xf32>):
      %buf = tile.buffer "input" slots 1 : memref<7x4x16xf32, "AM">
      tile.load %X[0, 0, 0, 0] [1, 16, 7, 4] -> %buf[0] dims [2, 3, 1]
      tile.store %buf[0] -> %Y[0, 0, 0, 0] [1, 16, 7, 4] dims [2, 3, 1]
      tile.load %X[0, 0, 0, 4] [1, 16, 7, 3] -> %buf[0] dims [2, 3, 1]
      tile.store %buf[0] -> %Y[0, 0, 0, 4] [1, 16, 7, 3] dims [2, 3, 1]
    } : (tensor<1x16x7x7xf32>) -> tensor<1x16x7x7xf32>
    %b = tile.nest "b" (%a) -> tensor<1x16x7x7xf32> attributes {op = "nn.copy"} {
    ^bb0(%X: tensor<1x16x7x7xf32>, %Y: tensor<1x16x7x7xf32>):
      %buf = tile.buffer "input" slots 1 : memref<7x4x16xf32, "AM">
      tile.load %X[0, 0, 0, 0] [1, 16, 7, 4] -> %buf[0] dims [2, 3, 1]
      tile.store %buf[0] -> %Y[0, 0, 0, 0] [1, 16, 7, 4] dims [2, 3, 1]
      tile.load %X[0, 0, 0, 4] [1, 16, 7, 3] -> %buf[0] dims [2, 3, 1]
      tile.store %buf[0] -> %Y[0, 0, 0, 4] [1, 16, 7, 3] dims [2, 3, 1]
    } : (tensor<1x16x7x7xf32>) -> tensor<1x16x7x7xf32>
    %c = tile.nest "c" (%a) -> tensor<1x16x7x7xf32> attributes {op = "nn.copy"} {
    ^bb0(%X: tensor<1x16x7x7xf32>, %Y: tensor<1x16x7x7xf32>):
      %buf = tile.buffer "input" slots 1 : memref<7x4x16xf32, "AM">
      tile.load %X[0, 0, 0, 0] [1, 16, 7, 4] -> %buf[0] dims [2, 3, 1]
      tile.store %buf[0] -> %Y[0, 0, 0, 0] [1, 16, 7, 4] dims [2, 3, 1]
      tile.load %X[0, 0, 0, 4] [1, 16, 7, 3] -> %buf[0] dims [2, 3, 1]
      tile.store %buf[0] -> %Y[0, 0, 0, 4] [1, 16, 7, 3] dims [2, 3, 1]
    } : (tensor<1x16x7x7xf32>) -> tensor<1x16x7x7xf32>
    %d = tile.nest "d" (%x) -> tensor<1x16x7x7xf32> attributes {op = "nn.copy"} {
    ^bb0(%X: tensor<1x16x7x7xf32>, %Y: tensor<1x16x7x7xf32>):
      %buf = tile.buffer "input" slots 1 : memref<7x4x16xf32, "AM">
      tile.load %X[0, 0, 0, 0] [1, 16, 7, 4] -> %buf[0] dims [2, 3, 1]
      tile.store %buf[0] -> %Y[0, 0, 0, 0] [1, 16, 7, 4] dims [2, 3, 1]
      tile.load %X[0, 0, 0, 4] [1, 16, 7, 3] -> %buf[0] dims [2, 3, 1]
      tile.store %buf[0] -> %Y[0, 0, 0, 4] [1, 16, 7, 3] dims [2, 3, 1]
    } : (tensor<1x16x7x7xf32>) -> tensor<1x16x7x7xf32>
    %v = tile.nest "v" (%d) -> tensor<1x16x7x7xf32> attributes {op = "nn.copy"} {
    ^bb0(%X: tensor<1x16x7x7xf32>, %Y: tensor<1x16x7x7xf32>):
      %buf = tile.buffer "input" slots 1 : memref<7x4x16xf32, "AM">
      %Xv = tile.view %X offset 0 sizes [1, 16, 49] strides [0, 49, 1] : tensor<1x16x7x7xf32> -> tensor<1x16x49xf32>
      tile.load %Xv[0, 0, 0] [1, 16, 28] -> %buf[0] dims [0, 1, 2]
      tile.store %buf[0] -> %Y[0, 0, 0, 0] [1, 16, 7, 4] dims [2, 3, 1]
    } : (tensor<1x16x7x7xf32>) -> tensor<1x16x7x7xf32>
    func.return %b, %c, %v : tensor<1x16x7x7xf32>, tensor<1x16x7x7xf32>, tensor<1x16x7x7xf32>
  }
}
