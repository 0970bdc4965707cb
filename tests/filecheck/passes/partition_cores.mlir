// RUN: nncc-opt %s -p 'partition-cores{target=edge}' | filecheck %s
// RUN: nncc-opt %s -p 'partition-cores{target=edge},partition-cores,partition-cores{target=edge cores=1}' | filecheck %s
// RUN: nncc-opt %s -p 'partition-cores{target=vector cores=2}' | filecheck %s --check-prefix=TWO
// RUN: not nncc-opt %s -p 'partition-cores{target=edge},partition-cores{target=vector}' 2>&1 | filecheck %s --check-prefix=TARGET
// RUN: not nncc-opt %s -p 'partition-cores{target=vector cores=2},partition-cores{cores=4}' 2>&1 | filecheck %s --check-prefix=CORES
// partition-cores records the whole resolved target (tile.target, the TOML table) and the core
// count (tile.cores) once. Run again with no option or the same value it keeps them; handed
// another value it refuses in one line, naming the option, the recorded value and the given one.

// CHECK:      builtin.module attributes {tile.target = {name = "edge", description = "{{[^"]*}}", clock_ghz = 2.000000e-01 : f64, cores = 1 : i64, core = {main = {kind = "matrix", {{.*}}}, memory = [{name = "BUF", {{.*}}}], dma = {{{.*}}}, dram = {{{.*}}}}, tile.cores = 1 : i64} {
// CHECK-NEXT:   func.func @main

// TWO:        builtin.module attributes {tile.target = {name = "vector", {{.*}}}, tile.cores = 2 : i64} {

// TARGET:     nncc-opt: error: partition-cores: option target=vector differs from tile.target recorded in the module (target edge); leave the option out to use it
// CORES:      nncc-opt: error: partition-cores: option cores=4 differs from tile.cores = 2 recorded in the module; leave the option out to use it

builtin.module {
  func.func @main(%x: tensor<1x4xf32>) -> tensor<1x4xf32> {
    %y = nn.relu %x : tensor<1x4xf32>
    func.return %y : tensor<1x4xf32>
  }
}
