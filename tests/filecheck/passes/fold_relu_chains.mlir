// RUN: nncc-opt %s --pass-plugin %S/../../../examples/plugins/fold_relu_chains.py -p fold-relu-chains | filecheck %s
// The example plugin of docs/writing-a-pass.md.

builtin.module {
  // CHECK-LABEL: func.func @chain
  // CHECK-NEXT:    %[[A:.*]] = nn.relu %x
  // CHECK-NEXT:    %[[C:.*]] = nn.clip %[[A]] min 0.000000e+00 max 6.000000e+00
  // CHECK-NEXT:    func.return %[[C]]
  func.func @chain(%x: tensor<2x3xf32>) -> tensor<2x3xf32> {
    %a = nn.relu %x : tensor<2x3xf32>
    %b = nn.relu %a : tensor<2x3xf32>
    %c = nn.clip %b min 0.0 max 6.0 : tensor<2x3xf32>
    %d = nn.relu %c : tensor<2x3xf32>
    func.return %d : tensor<2x3xf32>
  }

  // A clip that can go negative keeps its ReLU.
  // CHECK-LABEL: func.func @negative_clip
  // CHECK:         nn.clip
  // CHECK-NEXT:    nn.relu
  func.func @negative_clip(%x: tensor<2x3xf32>) -> tensor<2x3xf32> {
    %c = nn.clip %x min -1.0 max 6.0 : tensor<2x3xf32>
    %d = nn.relu %c : tensor<2x3xf32>
    func.return %d : tensor<2x3xf32>
  }
}
