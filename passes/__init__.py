"""nncc.passes."""
