"""The lecture's examples: the vocabulary, every (context, next character) pair of a name, and
the 80/10/10 split of the shuffled names."""

import hashlib
import random
from dataclasses import dataclass

import torch

from ..errors import DataError

END = "."  # the token that starts and ends every name


@dataclass(frozen=True)
class Vocab:
    chars: str  # END first, then the letters in sorted order

    @classmethod
    def from_words(cls, words):
        return cls(END + "".join(sorted(set("".join(words)))))

    @property
    def stoi(self):
        return {c: i for i, c in enumerate(self.chars)}

    def __len__(self):
        return len(self.chars)


def build_examples(words, vocab, block_size):
    """Every (context, next char) pair of every word, as the lecture's build_dataset makes them."""
    stoi = vocab.stoi
    xs, ys = [], []
    for word in words:
        context = [0] * block_size
        for ch in word + END:
            ix = stoi[ch]
            xs.append(context)
            ys.append(ix)
            context = context[1:] + [ix]
    X = torch.tensor(xs, dtype=torch.long).view(-1, block_size)
    return X, torch.tensor(ys, dtype=torch.long)


def split_words(words, fractions, shuffle_seed):
    """Shuffle with Python's random (as the lecture does) and cut at the cumulative fractions."""
    words = list(words)
    random.seed(shuffle_seed)
    random.shuffle(words)
    n1 = int(fractions[0] * len(words))
    n2 = int((fractions[0] + fractions[1]) * len(words))
    parts = {"train": words[:n1], "val": words[n1:n2], "test": words[n2:]}
    for name, part in parts.items():
        if not part:
            raise DataError(f"split.fractions leave the {name} split empty with {len(words)} names")
    return parts


def make_splits(words, block_size, fractions, shuffle_seed):
    """Vocab and {split: (X, Y)} for the lecture's 80/10/10 split."""
    vocab = Vocab.from_words(words)
    parts = split_words(words, fractions, shuffle_seed)
    return vocab, {name: build_examples(part, vocab, block_size) for name, part in parts.items()}


def examples_sha256(splits):
    """One hash of every split's (X, Y) tensors."""
    digest = hashlib.sha256()
    for name, (X, Y) in splits.items():
        digest.update(name.encode() + X.numpy().tobytes() + Y.numpy().tobytes())
    return digest.hexdigest()
