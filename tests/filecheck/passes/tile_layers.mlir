// RUN: rm -rf %t && mkdir -p %t && cp %s %t/in.mlir
// RUN: python -c "import numpy as np; np.savez('%t/in.weights.npz', w=np.ones((4, 8), np.float32), b=np.ones(4, np.float32))"
// RUN: nncc-opt %t/in.mlir -p 'tile-layers{target=edge tile-order=naive}' | filecheck %s
// RUN: nncc-opt %t/in.mlir -p 'partition-cores{target=edge},tile-layers{tile-order=naive},tile-layers,tile-layers{target=edge tile-order=naive tile-objective=cycles}' | filecheck %s --check-prefix=CORES
// RUN: not nncc-opt %t/in.mlir -p 'tile-layers{target=edge tile-order=naive},tile-layers{tile-order=scan}' 2>&1 | filecheck %s --check-prefix=ORDER
// RUN: not nncc-opt %t/in.mlir -p 'partition-cores{target=edge},tile-layers{target=vector}' 2>&1 | filecheck %s --check-prefix=TARGET
// RUN: not nncc-opt %t/in.mlir -p 'tile-layers{tile-order=zigzag}' 2>&1 | filecheck %s --check-prefix=BAD
// tile-layers records what the tiles were chosen for: the target when no pass recorded it yet
// (tile.target), the tile order (tile.order) and the objective (tile.objective). Later passes
// read them; one handed another value refuses.

// CHECK:      builtin.module attributes {nn.weights = "{{.*}}", tile.target = {name = "edge", {{.*}}}, tile.order = "naive", tile.objective = "cycles"} {
// CORES:      builtin.module attributes {nn.weights = "{{.*}}", tile.target = {name = "edge", {{.*}}}, tile.cores = 1 : i64, tile.order = "naive", tile.objective = "cycles"} {

// ORDER:      nncc-opt: error: tile-layers: option tile-order=scan differs from tile.order = "naive" recorded in the module; leave the option out to use it
// TARGET:     nncc-opt: error: tile-layers: option target=vector differs from tile.target recorded in the module (target edge); leave the option out to use it
// BAD:        nncc-opt: error: tile-layers: tile-order must be naive, scan or tsp, not 'zigzag'

builtin.module attributes {nn.weights = "in.weights.npz"} {
  func.func @main(%x: tensor<2x8xf32>) -> tensor<2x4xf32> {
    %w = nn.weight "w" : tensor<4x8xf32>
    %b = nn.weight "b" : tensor<4xf32>
    %y = fused.gemm %x, %w, %b trans_a false trans_b true alpha 1.0 beta 1.0 act relu {onnx_nodes = ["fc"]} : (tensor<2x8xf32>, tensor<4x8xf32>, tensor<4xf32>) -> tensor<2x4xf32>
    func.return %y : tensor<2x4xf32>
  }
}
