"""nncc.compiler."""
