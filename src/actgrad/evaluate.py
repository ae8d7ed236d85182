"""A model's mean cross-entropy over a whole split (the MLP's and the deep net's)."""

import torch
import torch.nn.functional as F

EVAL_ROWS = 16384  # contexts per pass over a split: bounds the memory an evaluation takes


@torch.no_grad()
def split_loss(logits_of, X, Y):
    """The mean cross-entropy of logits_of(contexts) over (X, Y), summed EVAL_ROWS contexts at
    a time."""
    total = 0.0
    for start in range(0, len(X), EVAL_ROWS):
        rows = slice(start, start + EVAL_ROWS)
        total += F.cross_entropy(logits_of(X[rows]), Y[rows], reduction="sum").item()
    return total / len(X)
