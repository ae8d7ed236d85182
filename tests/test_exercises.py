"""The lecture's exercises and d2l's symmetry questions, held by real (short) training runs:
what zero init trains (E01), what constant init collapses to, and BatchNorm folding (E02)."""

import pytest
import torch
import yaml
from conftest import LECTURE_SEED, ROOT

from actgrad.mlp import metrics
from actgrad.mlp.engine import train
from actgrad.mlp.network import (
    batch_stats,
    fold_batchnorm,
    init_weights,
    logits,
    loss,
    one_unit,
    seed_losses,
)
from actgrad.recipes import load_params

PARAMS = load_params(yaml.safe_load((ROOT / "params.yaml").read_text()))
SEEDS = (LECTURE_SEED, 1)


def trained(name, splits, steps=2000):
    """(weights at init, weights after `steps` steps, TrainResult) of a variant of params.yaml."""
    X, Y = splits[1]["train"]
    cfg = PARAMS.train.model_copy(
        update=dict(steps=steps, curve_every=500, ratio_every=50, units_every=500, seeds=SEEDS)
    )
    variant = PARAMS.variant(name)
    weights, generators = init_weights(SEEDS, variant, 27, 3, 10, 200)
    start = {n: t.clone() for n, t in weights.params.items()}
    return start, weights, train(weights, generators, X, Y, cfg, variant)


def test_zero_init_trains_only_b2_and_reaches_the_unigram_loss(splits):
    start, weights, result = trained("zero_init", splits)
    for name in ("W1", "b1", "W2"):
        assert (weights.params[name] == 0).all(), f"{name} left zero"
    assert torch.equal(weights.params["C"], start["C"])  # no gradient reaches the embedding
    assert (weights.params["b2"] != 0).all()
    names = list(weights.params)
    for s in range(len(SEEDS)):
        first = metrics.first_nonzero_steps(result.grad_norm[s], range(0, 2000, 50))
        assert {names[k]: step for k, step in first.items()} == {
            "C": None,
            "W1": None,
            "b1": None,
            "W2": None,
            "b2": 0,
        }
    assert (result.distinct_units == 1).all()
    # the model predicts softmax(b2) for every context: it cannot beat the unigram entropy
    X, Y = splits[1]["train"]
    unigram = metrics.unigram_loss(Y, 27)
    variant = PARAMS.variant("zero_init")
    for s in range(len(SEEDS)):
        zero_loss = loss(weights.seed_slice(s), variant, X, Y)
        assert unigram - 1e-6 <= zero_loss < unigram + 0.05


def test_constant_init_keeps_every_hidden_unit_a_copy_of_the_first(splits):
    _, weights, result = trained("constant_init", splits)
    W1, b1, W2 = (weights.params[n] for n in ("W1", "b1", "W2"))
    assert (W1 == W1[:, :, :1]).all() and (b1 == b1[:, :, :1]).all() and (W2 == W2[:, :1]).all()
    assert (result.distinct_units == 1).all()
    X, Y = splits[1]["val"]
    variant = PARAMS.variant("constant_init")
    whole = seed_losses(weights, variant, X, Y)
    assert whole == pytest.approx(seed_losses(one_unit(weights), variant, X, Y), abs=1e-5)


def test_one_random_tensor_breaks_the_symmetry(splits):
    _, weights, result = trained("constant_init_random_w2", splits)
    assert (result.distinct_units[:, 0] == 1).all()  # equal units at init ...
    assert (result.distinct_units[:, -1] == 200).all()  # ... all different once W2 differs
    W1 = weights.params["W1"]
    assert not (W1 == W1[:, :, :1]).all()


def test_batchnorm_folds_into_w1_and_b1_without_changing_a_logit(splits):
    (X, _), (Xv, Yv) = splits[1]["train"], splits[1]["val"]
    _, weights, _ = trained("batchnorm", splits, steps=500)
    variant = PARAMS.variant("batchnorm")
    plain = variant.model_copy(update=dict(norm=PARAMS.variant("kaiming").norm))
    for s in range(len(SEEDS)):
        w = weights.seed_slice(s)
        stats = batch_stats(w, X, variant)
        folded = fold_batchnorm(w, stats)
        assert set(folded) == {"C", "W1", "b1", "W2", "b2"}
        with torch.no_grad():
            diff = (logits(folded, Xv, plain) - logits(w, Xv, variant, stats)).abs().max()
        assert diff <= 1e-4
        folded_loss = loss(folded, plain, Xv, Yv)
        assert folded_loss == pytest.approx(loss(w, variant, Xv, Yv, stats), abs=1e-6)
