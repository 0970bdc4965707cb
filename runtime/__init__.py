"""nncc.runtime."""
