"""What the training stages read: the split stage's tensors and vocabulary."""

import json
from pathlib import Path

import torch

from actgrad.data import Vocab


def load_split(split_dir, name):
    """(X, Y) of one split written by the split stage."""
    data = torch.load(Path(split_dir) / f"{name}.pt", weights_only=True)
    return data["X"], data["Y"]


def load_vocab(split_dir):
    return Vocab(json.loads((Path(split_dir) / "vocab.json").read_text())["chars"])
