// RUN: rm -rf %t && mkdir -p %t && cp %s %t/in.mlir
// RUN: python -c "import numpy as np; np.savez('%t/in.weights.npz', w=np.ones((4, 8), np.float32), b=np.ones(4, np.float32))"
// RUN: nncc-opt %t/in.mlir -p 'partition-cores{target=edge},tile-layers{tile-order=naive},double-buffer' -o %t/m.tile.mlir
// RUN: nncc-opt %t/m.tile.mlir -p lower-to-isa -o %t/m.isa.mlir
// RUN: filecheck %s --input-file %t/m.isa.mlir
// RUN: mkdir -p %t/same && nncc-opt %t/m.tile.mlir -p 'lower-to-isa{target=edge tile-order=naive tile-objective=cycles}' -o %t/same/m.isa.mlir
// RUN: diff %t/m.isa.mlir %t/same/m.isa.mlir
// RUN: nncc-opt %t/m.tile.mlir -p lower-to-isa --print-ir-after=lower-to-isa -o %t/printed.isa.mlir 2>&1 | filecheck %s
// RUN: not nncc-opt %t/m.tile.mlir -p 'lower-to-isa{target=vector}' 2>&1 | filecheck %s --check-prefix=TARGET
// RUN: not nncc-opt %t/m.tile.mlir -p 'lower-to-isa{tile-order=scan}' 2>&1 | filecheck %s --check-prefix=ORDER
// RUN: not nncc-opt %t/m.tile.mlir -p 'lower-to-isa{target-set="dram.bandwidth_gbps=1.0"}' 2>&1 | filecheck %s --check-prefix=SET
// lower-to-isa with no options lowers for what the module records (target edge, naive order,
// one core, double buffering); the same values as options change nothing, and other values are
// refused. The isa module keeps the target as isa.target; its isa ops are built when the IR is
// written or printed (never left as the isa.deferred marker).

// CHECK:      builtin.module attributes {nn.weights = "{{.*}}", tile.cores = 1 : i64, tile.order = "naive", tile.objective = "cycles", tile.buffers = 2 : i64, isa.target = {name = "edge", {{.*}}}, isa.mode = "inference", isa.dram_bytes = {{[0-9]+}} : i64, isa.symbols = [{{.*}}], isa.predictions = {{{.*}}}} {
// CHECK-NEXT:   func.func @program() {
// CHECK-NEXT:     isa.layer {name = "y", op = "fused.gemm", nodes = "fc", phase = "forward"}
// CHECK:          isa.matmul {core = 0 : i64, unit = "main"
// CHECK:          isa.barrier
// CHECK-NEXT:     func.return
// CHECK-NOT:  isa.deferred

// TARGET:     nncc-opt: error: lower-to-isa: option target=vector differs from tile.target recorded in the module (target edge); leave the option out to use it
// ORDER:      nncc-opt: error: lower-to-isa: option tile-order=scan differs from tile.order = "naive" recorded in the module; leave the option out to use it
// SET:        nncc-opt: error: lower-to-isa: option target-set=dram.bandwidth_gbps=1.0 differs from tile.target recorded in the module (target edge with dram.bandwidth_gbps = 12.8, not 1.0); leave the option out to use it

builtin.module attributes {nn.weights = "in.weights.npz"} {
  func.func @main(%x: tensor<2x8xf32>) -> tensor<2x4xf32> {
    %w = nn.weight "w" : tensor<4x8xf32>
    %b = nn.weight "b" : tensor<4xf32>
    %y = fused.gemm %x, %w, %b trans_a false trans_b true alpha 1.0 beta 1.0 act relu {onnx_nodes = ["fc"]} : (tensor<2x8xf32>, tensor<4x8xf32>, tensor<4xf32>) -> tensor<2x4xf32>
    func.return %y : tensor<2x4xf32>
  }
}
