"""Stage split: the vocabulary and the lecture's 80/10/10 split of (context, next char) examples."""

import json

import click
import torch

from actgrad.data import make_splits, read_words

from .common import atomic_path, log, read_params, run_stage, stage_command


@click.command()
@click.option("--names", default="data/raw/names.txt", show_default=True)
@click.option("--out", default="data/split", show_default=True)
@stage_command
def main(names, out):
    cfg = read_params().split
    log(f"split: {names}, block size {cfg.block_size}, fractions {list(cfg.fractions)}")
    words = read_words(open(names, errors="replace").read(), names)  # a bad byte is named
    vocab, splits = make_splits(words, cfg.block_size, cfg.fractions, cfg.shuffle_seed)
    with atomic_path(out) as tmp:
        tmp.mkdir()
        for name, (X, Y) in splits.items():
            torch.save({"X": X, "Y": Y}, tmp / f"{name}.pt")
        (tmp / "vocab.json").write_text(json.dumps({"chars": vocab.chars}) + "\n")
    sizes = ", ".join(f"{name} {len(Y):,}" for name, (_, Y) in splits.items())
    log(f"split: wrote {out}: {len(words):,} names, vocab {len(vocab)}, examples {sizes}")


if __name__ == "__main__":
    run_stage(main)
