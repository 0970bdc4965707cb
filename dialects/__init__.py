"""nncc.dialects."""
