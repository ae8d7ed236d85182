"""The numbers behind the per-variant figures: init loss, saturation, update ratios, samples."""

import pytest
import torch
import torch.nn.functional as F
from conftest import LECTURE_SEED

from actgrad import diagnostics
from actgrad.config import TrainConfig, Variant
from actgrad.model import init_one
from actgrad.train import train_seeds

RECIPES = {
    "baseline": Variant(),
    "softmax_fix": Variant(w2_scale=0.01, b2_scale=0.0),
    "kaiming": Variant(w1_scale=5 / 3, w1_fan_in=True, b1_scale=0.01, w2_scale=0.01, b2_scale=0.0),
    "batchnorm": Variant(
        w1_scale=5 / 3, w1_fan_in=True, w2_scale=0.01, b2_scale=0.0, batchnorm=True
    ),
}


def first_batch(name, splits):
    """The weights at init and the first minibatch, as the training loop draws it."""
    X, Y = splits[1]["train"]
    w, g = init_one(LECTURE_SEED, RECIPES[name], 27, 3, 10, 200)
    ix = torch.randint(0, X.shape[0], (32,), generator=g)
    return w, X[ix], Y[ix]


def init_loss(name, splits):
    w, X, Y = first_batch(name, splits)
    _, h = diagnostics.init_activations(w, X)
    return F.cross_entropy(h @ w["W2"] + w["b2"], Y).item()


def test_ideal_init_loss_is_minus_log_one_over_27():
    assert diagnostics.ideal_init_loss(27) == pytest.approx(3.2958, abs=1e-4)


def test_baseline_starts_far_above_the_ideal_loss_and_the_softmax_fix_near_it(splits):
    assert init_loss("baseline", splits) > 20
    assert abs(init_loss("softmax_fix", splits) - 3.2958) < 0.1


def test_baseline_saturates_far_more_neurons_at_init_than_kaiming(splits):
    fractions = {}
    for name in ("baseline", "kaiming"):
        w, X, _ = first_batch(name, splits)
        _, h = diagnostics.init_activations(w, X)
        saturated, fractions[name], dead = diagnostics.saturation(h)
        assert saturated.shape == (32, 200) and 0 <= dead <= 200
    assert fractions["baseline"] > 0.5 and fractions["kaiming"] < 0.15


def test_batchnorm_normalises_the_tanh_input_at_init(splits):
    w, X, _ = first_batch("batchnorm", splits)
    hpre, _ = diagnostics.init_activations(w, X)
    torch.testing.assert_close(hpre.std(0), torch.ones(200), atol=1e-5, rtol=0)


def test_update_ratios_scale_the_recorded_grad_data_by_the_lr_schedule():
    cfg = TrainConfig(lr=0.1, lr_decay_step=200, lr_decayed=0.01)
    ratios = diagnostics.log10_update_ratios(
        torch.full((4, 3), 0.01), [0, 100, 200, 300], cfg.lr_at
    )
    assert ratios[:, 0].tolist() == pytest.approx([-3, -3, -4, -4])


def test_training_records_grad_data_ratios_every_ratio_every_steps(splits):
    X, Y = splits[1]["train"]
    cfg = TrainConfig(steps=250, lr_decay_step=125, curve_every=100, ratio_every=50, seeds=(1, 2))
    _, result = train_seeds(cfg.seeds, RECIPES["kaiming"], cfg, X, Y, 27)
    assert result.grad_data.shape == (2, 5, 3)
    assert torch.isfinite(result.grad_data).all() and (result.grad_data > 0).all()


def test_samples_are_reproducible_names(splits):
    vocab = splits[0]
    w, _, _ = first_batch("kaiming", splits)
    names = diagnostics.sample_names(w, vocab, 3, 20, seed=7)
    assert len(names) == 20 and names == diagnostics.sample_names(w, vocab, 3, 20, seed=7)
    assert all(set(n) <= set(vocab.chars[1:]) for n in names)
    assert len(set(names)) > 10
