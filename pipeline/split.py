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
from actgrad.params import read_params

from .outputs import writing
from .stage import log, run_stage, stage_command


def examples_sha256(splits):
    """One hash of every split's (X, Y) tensors."""
    digest = hashlib.sha256()
    for name, (X, Y) in splits.items():
        digest.update(name.encode() + X.numpy().tobytes() + Y.numpy().tobytes())
    return digest.hexdigest()


@click.command()
@click.option("--names", required=True, help="the download stage's names.txt")
@click.option("--out", required=True, help="the folder of the split's tensors")
@click.option("--summary", required=True, help="the JSON of what the split holds")
@stage_command
def main(names, out, summary):
    cfg = read_params().split
    log(f"split: {names}, block size {cfg.block_size}, fractions {list(cfg.fractions)}")
    raw = Path(names).read_bytes()
    words = read_words(raw.decode(errors="replace"), names)  # a bad byte is named
    vocab, splits = make_splits(words, cfg.block_size, cfg.fractions, cfg.shuffle_seed)
    examples = {name: len(Y) for name, (_, Y) in splits.items()}
    with writing() as outputs:
        folder = outputs.path(out)
        folder.mkdir()
        for name, (X, Y) in splits.items():
            torch.save({"X": X, "Y": Y}, folder / f"{name}.pt")
        (folder / "vocab.json").write_text(json.dumps({"chars": vocab.chars}) + "\n")
        outputs.json(
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
