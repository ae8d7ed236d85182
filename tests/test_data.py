import random

import pytest
import torch

from actgrad.data.examples import Vocab, build_examples, make_splits
from actgrad.data.names import read_words
from actgrad.errors import DataError


def lecture_build_dataset(words, stoi, block_size=3):
    """The lecture notebook's build_dataset, transcribed."""
    X, Y = [], []
    for w in words:
        context = [0] * block_size
        for ch in w + ".":
            ix = stoi[ch]
            X.append(context)
            Y.append(ix)
            context = context[1:] + [ix]
    return torch.tensor(X), torch.tensor(Y)


def test_vocab_is_dot_then_a_to_z(names_text):
    vocab = Vocab.from_words(read_words(names_text))
    assert vocab.chars == ".abcdefghijklmnopqrstuvwxyz"
    assert len(vocab) == 27 and vocab.stoi["."] == 0 and vocab.stoi["z"] == 26


def test_split_sizes_and_examples_match_the_lecture(names_text, splits):
    words = names_text.splitlines()
    assert len(words) == 32033
    chars = sorted(set("".join(words)))
    stoi = {s: i + 1 for i, s in enumerate(chars)} | {".": 0}
    random.seed(42)
    random.shuffle(words)
    n1, n2 = int(0.8 * len(words)), int(0.9 * len(words))
    expected = {
        "train": lecture_build_dataset(words[:n1], stoi),
        "val": lecture_build_dataset(words[n1:n2], stoi),
        "test": lecture_build_dataset(words[n2:], stoi),
    }
    _, ours = splits
    assert {k: len(v[1]) for k, v in ours.items()} == {"train": 182625, "val": 22655, "test": 22866}
    for name, (X, Y) in expected.items():
        assert torch.equal(ours[name][0], X) and torch.equal(ours[name][1], Y), name


def test_block_size_changes_the_context_width(names_text):
    words = read_words(names_text)[:50]
    X, Y = build_examples(words, Vocab.from_words(words), block_size=5)
    assert X.shape == (len(Y), 5)
    assert X[0].tolist() == [0] * 5


def test_bad_names_are_refused_with_the_line():
    with pytest.raises(DataError, match="line 2: 'b0b' has '0'"):
        read_words("anna\nb0b\n")
    with pytest.raises(DataError, match="no names"):
        read_words("\n\n")


def test_fractions_that_empty_a_split_are_refused():
    with pytest.raises(DataError, match="val split empty"):
        make_splits(["ab", "cd", "ef"], 3, (0.9, 0.05, 0.05), 42)
