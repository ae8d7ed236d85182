"""Stage split: the vocabulary and the lecture's 80/10/10 split of (context, next char) examples.

Writes the tensors to data/split/ (DVC's cache) and what they hold to metrics/split.json
(git): the counts and hashes every training run names in MLflow as the data it trained on.
"""

from actgrad.data.examples import examples_sha256, make_splits
from actgrad.params import SplitParams, section

from ..files import Json, Names, Split
from ..runner import Stage


def compute(params, names):
    vocab, splits = make_splits(
        names.words, params.block_size, params.fractions, params.shuffle_seed
    )
    summary = {
        "names": len(names.words),
        "names_sha256": names.sha256,
        "vocab_size": len(vocab),
        "examples": {name: len(Y) for name, (_, Y) in splits.items()},
        "examples_sha256": examples_sha256(splits),
    }
    return {"split": {**splits, "vocab": vocab}, "summary": summary}


def summary(made):
    counts = ", ".join(f"{name} {n:,}" for name, n in made.values["summary"]["examples"].items())
    names, vocab = made.values["summary"]["names"], made.values["summary"]["vocab_size"]
    return f"{names:,} names, vocab {vocab}, {counts}"


STAGE = Stage(
    name="split",
    compute=compute,
    inputs={"names": Names},
    outputs={"split": Split, "summary": Json},
    params=lambda path: section(path, "split", SplitParams),
    describe=lambda made: (
        f"block size {made.params.block_size}, fractions {list(made.params.fractions)}"
    ),
    summary=summary,
)

if __name__ == "__main__":
    STAGE.main()
