"""The names dataset: fetching it, the vocabulary, and the lecture's train/val/test split."""

import hashlib
import os
import random
import urllib.error
import urllib.request
from dataclasses import dataclass
from pathlib import Path

import torch

from .errors import DataError

CACHE_ENV = "ACTGRAD_DATA_CACHE"
END = "."  # the token that starts and ends every name


def default_cache_dir():
    """$ACTGRAD_DATA_CACHE, else the user's cache dir."""
    if os.environ.get(CACHE_ENV):
        return Path(os.environ[CACHE_ENV])
    base = os.environ.get("XDG_CACHE_HOME") or Path.home() / ".cache"
    return Path(base) / "actgrad"


def sha256_of(data):
    return hashlib.sha256(data).hexdigest()


def fetch_names(url, sha256, cache_dir, timeout=30):
    """Return the bytes of names.txt: from cache_dir/names.txt if it is there, else from url.

    A cached file must have the expected hash. A good download is stored in the cache
    (atomically) so the next call needs no network.
    """
    cached = Path(cache_dir) / "names.txt"
    if cached.is_file():
        data = cached.read_bytes()
        if sha256_of(data) != sha256:
            raise DataError(
                f"{cached} has sha256 {sha256_of(data)}, but data.sha256 in params.yaml is "
                f"{sha256}; replace it with the right names.txt, or delete it to download {url}"
            )
        return data
    try:
        with urllib.request.urlopen(url, timeout=timeout) as response:
            data = response.read()
    except (urllib.error.URLError, OSError, ValueError) as e:
        reason = getattr(e, "reason", e)
        raise DataError(
            f"cannot download {url} ({reason}); check data.url in params.yaml, or work offline by "
            f"putting names.txt in ${CACHE_ENV} (now {cache_dir})"
        ) from None
    actual = sha256_of(data)
    if actual != sha256:
        raise DataError(
            f"sha256 mismatch for {url}: expected {sha256}, got {actual} "
            "(truncated or corrupted download, or data.sha256 in params.yaml is wrong)"
        )
    cached.parent.mkdir(parents=True, exist_ok=True)
    tmp = cached.with_name(f".names.txt.{os.getpid()}.tmp")
    tmp.write_bytes(data)
    os.replace(tmp, cached)
    return data


def read_words(text, source="names.txt"):
    """One name a line; blank lines skipped. Errors name `source` and the first bad line."""
    words = []
    for lineno, line in enumerate(text.splitlines(), start=1):
        word = line.strip()
        if not word:
            continue
        bad = [c for c in word if not "a" <= c <= "z"]
        if bad:
            raise DataError(
                f"{source} line {lineno}: {word!r} has {bad[0]!r}; names may hold only a-z"
            )
        words.append(word)
    if not words:
        raise DataError(f"{source} holds no names (empty file or only blank lines)")
    return words


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
