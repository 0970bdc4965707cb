"""nncc.compiler.targets."""
