"""nncc.runtime.targets."""
