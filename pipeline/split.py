"""Stage split: the vocabulary and the lecture's 80/10/10 split of (context, next char) examples.

Writes the tensors to data/split/ (DVC's cache) and what they hold to metrics/split.json
(git): the counts and hashes every training run names in MLflow as the data it trained on.
"""

import hashlib
import json
from pathlib import Path

import click
import torch

from actgrad.data import make_splits, read_words, sha256_of

from .outputs import atomic_path, write_json
from .params import read_params
from .stage import log, run_stage, stage_command


def examples_sha256(splits):
    """One hash of every split's (X, Y) tensors."""
    digest = hashlib.sha256()
    for name, (X, Y) in splits.items():
        digest.update(name.encode() + X.numpy().tobytes() + Y.numpy().tobytes())
    return digest.hexdigest()


@click.command()
@click.option("--names", default="data/raw/names.txt", show_default=True)
@click.option("--out", default="data/split", show_default=True)
@click.option("--summary", default="metrics/split.json", show_default=True)
@stage_command
def main(names, out, summary):
    cfg = read_params().split
    log(f"split: {names}, block size {cfg.block_size}, fractions {list(cfg.fractions)}")
    raw = Path(names).read_bytes()
    words = read_words(raw.decode(errors="replace"), names)  # a bad byte is named
    vocab, splits = make_splits(words, cfg.block_size, cfg.fractions, cfg.shuffle_seed)
    with atomic_path(out) as tmp:
        tmp.mkdir()
        for name, (X, Y) in splits.items():
            torch.save({"X": X, "Y": Y}, tmp / f"{name}.pt")
        (tmp / "vocab.json").write_text(json.dumps({"chars": vocab.chars}) + "\n")
    examples = {name: len(Y) for name, (_, Y) in splits.items()}
    write_json(
        summary,
        {
            "names": len(words),
            "names_sha256": sha256_of(raw),
            "vocab_size": len(vocab),
            "examples": examples,
            "examples_sha256": examples_sha256(splits),
        },
    )
    counts = ", ".join(f"{name} {n:,}" for name, n in examples.items())
    log(f"split: wrote {out}, {summary}: {len(words):,} names, vocab {len(vocab)}, {counts}")


if __name__ == "__main__":
    run_stage(main)
