import pytest
import torch
from conftest import LECTURE_SEED
from lecture import lecture_loop

from actgrad.config import TrainConfig, Variant
from actgrad.model import init_weights, seed_losses
from actgrad.train import Diverged, train, train_seeds

KAIMING = Variant(w1_scale=5 / 3, w1_fan_in=True, b1_scale=0.01, w2_scale=0.01, b2_scale=0.0)
BATCHNORM = Variant(w1_scale=5 / 3, w1_fan_in=True, w2_scale=0.01, b2_scale=0.0, batchnorm=True)
BASELINE = Variant()


def engine(X, Y, variant, seeds, steps=300, **cfg):
    cfg = TrainConfig(steps=steps, lr_decay_step=steps // 2, curve_every=100, seeds=seeds, **cfg)
    weights, generators = init_weights(seeds, variant, 27, 3, 10, 200)
    return weights, train(weights, generators, X, Y, cfg)


SOFTMAX_FIX = Variant(w2_scale=0.01, b2_scale=0.0)


@pytest.mark.parametrize(
    "variant", [SOFTMAX_FIX, KAIMING, BATCHNORM], ids=["softmax_fix", "kaiming", "batchnorm"]
)
def test_engine_follows_the_lecture_loop_step_by_step(splits, variant):
    X, Y = splits[1]["train"]
    expected, _ = lecture_loop(X, Y, variant, 300, 150)
    _, result = engine(X, Y, variant, (LECTURE_SEED,))
    torch.testing.assert_close(result.losses[0], expected, rtol=0, atol=1e-5)


def test_baseline_follows_the_lecture_loop_until_rounding_grows(splits):
    # The baseline's huge logits amplify float rounding differences (our tanh is computed as
    # 2 sigmoid(2a) - 1), so its trajectory drifts from the notebook's within ~100 steps.
    X, Y = splits[1]["train"]
    expected, _ = lecture_loop(X, Y, BASELINE, 20, 10)
    _, result = engine(X, Y, BASELINE, (LECTURE_SEED,), steps=20)
    torch.testing.assert_close(result.losses[0], expected, rtol=1e-4, atol=0)


@pytest.mark.parametrize("variant", [KAIMING, BATCHNORM], ids=["kaiming", "batchnorm"])
def test_a_seed_trains_the_same_alone_or_among_others(splits, variant):
    X, Y = splits[1]["train"]
    alone_w, alone = engine(X, Y, variant, (LECTURE_SEED,))
    batch_w, batch = engine(X, Y, variant, (3, LECTURE_SEED, 1, 2, 4))
    assert torch.equal(batch.losses[1], alone.losses[0])
    assert torch.equal(batch_w.params["W2"][1], alone_w.params["W2"][0])
    if variant.batchnorm:
        assert torch.equal(batch_w.bn_std[1], alone_w.bn_std[0])


def test_workers_split_the_seeds_without_changing_a_bit(splits):
    """One process or five, as the README says: the study's five seeds, one per process."""
    X, Y = splits[1]["train"]
    seeds = (LECTURE_SEED, 1, 2, 3, 4)
    cfg = TrainConfig(steps=200, lr_decay_step=100, curve_every=100, seeds=seeds)
    one_w, one = train_seeds(cfg.seeds, BATCHNORM, cfg, X, Y, 27, workers=1)
    for workers in (2, 5):
        many_w, many = train_seeds(cfg.seeds, BATCHNORM, cfg, X, Y, 27, workers=workers)
        assert many_w.seeds == cfg.seeds
        assert torch.equal(one.losses, many.losses)
        for name in one_w.params:
            assert torch.equal(one_w.params[name], many_w.params[name]), (workers, name)
        assert torch.equal(one_w.bn_mean, many_w.bn_mean)


def test_training_lowers_the_loss_of_every_seed(splits):
    (X, Y), (Xv, Yv) = splits[1]["train"], splits[1]["val"]
    weights, result = engine(X, Y, KAIMING, (LECTURE_SEED, 7), steps=500)
    assert all(v < 2.7 for v in seed_losses(weights, Xv, Yv))
    assert (result.losses[:, :50].mean(1) > result.losses[:, -50:].mean(1) + 0.2).all()


def test_divergence_stops_at_the_first_bad_step_naming_seed_and_step(splits):
    X, Y = splits[1]["train"]
    with pytest.raises(Diverged) as e:
        engine(X, Y, BASELINE, (LECTURE_SEED, 5), steps=300, lr=100.0)
    assert e.value.seed in (LECTURE_SEED, 5) and 0 < e.value.step < 300
    assert f"diverged at step {e.value.step}" in str(e.value)
