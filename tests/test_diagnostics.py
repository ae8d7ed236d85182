"""The instruments against their definitions: init loss, inactive and dead units, distinct
units, update:data ratios from the real update, samples."""

import functools

import pytest
import torch
import torch.nn.functional as F
import yaml
from conftest import LECTURE_SEED, ROOT
from lecture import RECIPES, lecture_loop

from actgrad.mlp import metrics, probes
from actgrad.mlp.engine import train
from actgrad.mlp.network import draw, init_weights, logits
from actgrad.mlp.probes import unit_counts
from actgrad.recipes import load_params
from actgrad.sampling import sample_names

PARAMS = load_params(yaml.safe_load((ROOT / "params.yaml").read_text()))


def first_batch(name, splits):
    """One seed's weights at init and the first minibatch, as the training loop draws it."""
    X, Y = splits[1]["train"]
    w, g = draw(LECTURE_SEED, PARAMS.variant(name), 27, 3, 10, 200)
    w = {n: t.view(-1, t.shape[-1]) for n, t in w.items()}
    ix = torch.randint(0, X.shape[0], (32,), generator=g)
    return w, X[ix], Y[ix]


def init_loss(name, splits):
    w, X, Y = first_batch(name, splits)
    _, h = probes.batch_activations(w, X, PARAMS.variant(name))
    return F.cross_entropy(h @ w["W2"] + w["b2"], Y).item()


def test_ideal_init_loss_is_minus_log_one_over_27():
    assert metrics.ideal_init_loss(27) == pytest.approx(3.2958, abs=1e-4)


def test_init_loss_is_the_lecture_loops_first_loss(splits):
    """The lecture printed 27.8817 for the baseline's first batch, 3.3221 after the softmax fix:
    the loss of the first minibatch at init, as its loop computes it."""
    X, Y = splits[1]["train"]
    for name, printed in (("baseline", 27.8817), ("softmax_fix", 3.3221)):
        first, _, _ = lecture_loop(X, Y, RECIPES[name], 1, 1)
        assert init_loss(name, splits) == pytest.approx(first[0].item(), abs=1e-4)
        assert init_loss(name, splits) == pytest.approx(printed, abs=1e-4)


def test_inactive_fraction_and_dead_units_follow_the_tanh_definition(splits):
    fractions = {}
    for name in ("baseline", "kaiming"):
        w, X, _ = first_batch(name, splits)
        hpre = w["C"][X].view(32, -1) @ w["W1"] + w["b1"]
        saturated = torch.tanh(hpre).abs() > 0.99  # the lecture's definition, with torch's tanh
        z, h = probes.batch_activations(w, X, PARAMS.variant(name))
        activation = PARAMS.variant(name).activation
        inactive, fractions[name], dead = metrics.inactive_units(z, h, activation)
        assert (inactive != saturated).sum() <= 2  # at most a rounding at the 0.99 boundary
        assert dead == int(saturated.all(0).sum())
    assert fractions["baseline"] > 0.5 and fractions["kaiming"] < 0.15


def test_dead_units_on_the_training_split_match_a_brute_force_count(splits):
    """Units made dead on purpose: a ReLU unit with a hugely negative bias never fires, and a tanh
    unit with a huge bias saturates on every context; counted over all 182,625 examples."""
    X, _ = splits[1]["train"]
    for name, killed in (("relu_kaiming", slice(0, 7)), ("kaiming", slice(10, 15))):
        variant = PARAMS.variant(name)
        weights, _ = init_weights((LECTURE_SEED, 1), variant, 27, 3, 10, 200)
        weights.params["b1"][:, :, killed] = -1e3 if name == "relu_kaiming" else 1e3
        dead = unit_counts(weights, variant, torch.unique(X, dim=0))[0]
        for s in range(2):
            w = weights.seed_slice(s)
            a = w["C"][X].view(len(X), -1) @ w["W1"] + w["b1"]
            brute = (a <= 0) if name == "relu_kaiming" else (torch.tanh(a).abs() > 0.99)
            assert dead[s] == brute.all(0).sum() >= 5


def test_distinct_units_count_copies_as_one(splits):
    variant = PARAMS.variant("kaiming")
    weights, _ = init_weights((LECTURE_SEED,), variant, 27, 3, 10, 200)
    X, _ = splits[1]["train"]
    contexts = torch.unique(X, dim=0)
    assert unit_counts(weights, variant, contexts)[1].tolist() == [200]
    weights.params["W1"][0, :, 3] = weights.params["W1"][0, :, 4]
    assert unit_counts(weights, variant, contexts)[1].tolist() == [200]  # b1 still differs
    weights.params["b1"][0, :, 3] = weights.params["b1"][0, :, 4]
    assert unit_counts(weights, variant, contexts)[1].tolist() == [199]  # unit 3 copies unit 4
    zero = PARAMS.variant("zero_init")
    weights, _ = init_weights((LECTURE_SEED,), zero, 27, 3, 10, 200)
    assert unit_counts(weights, zero, contexts)[1].tolist() == [1]
    # a constant C and W1: one embedding dimension and one W1 row, until training splits them
    constant = PARAMS.variant("constant_embedding")
    weights, _ = init_weights((LECTURE_SEED,), constant, 27, 3, 10, 200)
    assert [c.tolist() for c in unit_counts(weights, constant, contexts)[3:]] == [[1], [1]]
    weights, _ = init_weights((LECTURE_SEED,), zero, 27, 3, 10, 200)  # C drawn, W1 zeros
    assert [c.tolist() for c in unit_counts(weights, zero, contexts)[3:]] == [[10], [1]]


def test_update_ratio_is_measured_from_the_real_update(splits):
    """For SGD it equals the lecture's std(lr * grad) / std(weight after), up to rounding."""
    X, Y = splits[1]["train"]
    name = "kaiming"
    cfg = PARAMS.train.model_copy(
        update=dict(steps=1, curve_every=1, ratio_every=1, seeds=(LECTURE_SEED,))
    )
    variant = PARAMS.variant(name)
    weights, generators = init_weights(cfg.seeds, variant, 27, 3, 10, 200)
    before = {n: t.clone() for n, t in weights.params.items()}
    result = train(weights, generators, X, Y, cfg, variant)
    _, (C, W1, W2, b2, b1), _ = lecture_loop(X, Y, RECIPES[name], 1, 1)
    for k, tensor in enumerate(("C", "W1", "W2")):
        after = weights.params[tensor][0].double()
        real = ((after - before[tensor][0].double()).std() / after.std()).log10().item()
        assert result.update_ratio[0, 0, k].item() == pytest.approx(real, abs=1e-6)
        grad = {"C": C, "W1": W1, "W2": W2}[tensor].grad
        lecture = ((0.1 * grad).std() / after.float().std()).log10().item()
        assert real == pytest.approx(lecture, abs=1e-4)


def test_batchnorm_normalises_the_activation_input_at_init(splits):
    w, X, _ = first_batch("batchnorm", splits)
    z, _ = probes.batch_activations(w, X, PARAMS.variant("batchnorm"))
    torch.testing.assert_close(z.std(0), torch.ones(200), atol=1e-5, rtol=0)


def test_calibrated_statistics_and_loss_follow_the_lecture(splits):
    """The notebook's calibration: hpreact over the whole training set, its mean and std."""
    from actgrad.mlp.network import batch_stats, loss

    (X, Y), (Xv, Yv) = splits[1]["train"], splits[1]["val"]
    variant = PARAMS.variant("batchnorm")
    _, (C, W1, W2, b2, bngain, bnbias), _ = lecture_loop(X, Y, RECIPES["batchnorm"], 200, 100)
    with torch.no_grad():
        hpreact = C[X].view(len(X), -1) @ W1
        bnmean, bnstd = hpreact.mean(0, keepdim=True), hpreact.std(0, keepdim=True)
        h = torch.tanh(bngain * (C[Xv].view(len(Xv), -1) @ W1 - bnmean) / bnstd + bnbias)
        lecture_val = F.cross_entropy(h @ W2 + b2, Yv).item()
    w = {"C": C, "W1": W1, "W2": W2, "b2": b2, "norm_gain": bngain, "norm_bias": bnbias}
    w = {n: t.detach() for n, t in w.items()}
    stats = batch_stats(w, X, variant)
    torch.testing.assert_close(stats["mean"], bnmean, rtol=1e-5, atol=1e-5)
    torch.testing.assert_close(stats["std"], bnstd, rtol=1e-5, atol=1e-5)
    assert loss(w, variant, Xv, Yv, stats) == pytest.approx(lecture_val, abs=1e-5)


def test_samples_are_reproducible_names(splits):
    vocab = splits[0]
    w, _, _ = first_batch("kaiming", splits)
    model = functools.partial(logits, w, variant=PARAMS.variant("kaiming"))
    names = sample_names(model, vocab, 3, 20, seed=7)
    assert len(names) == 20 and names == sample_names(model, vocab, 3, 20, seed=7)
    assert all(set(n) <= set(vocab.chars[1:]) for n in names)
    assert len(set(names)) > 10


def spec(**values):
    """A variant of params.yaml's schema, from what a user would write under variants:."""
    from actgrad.params import validate
    from actgrad.recipes import Variant

    return validate(Variant, values, "variants.test")


def test_init_schemes_are_their_formulas_on_the_seeds_randn_draws():
    """kaiming: randn × gain / √fan_in (tanh 5/3, ReLU √2, or the gain given); xavier: randn ×
    √(2 / (fan_in + fan_out)); a number: randn × it; a tensor left out: randn × 1; zeros and
    constants: drawn, then replaced."""
    g = torch.Generator().manual_seed(LECTURE_SEED)
    randn = {
        n: torch.randn(s, generator=g)
        for n, s in (
            ("C", (27, 10)),
            ("W1", (30, 200)),
            ("b1", (200,)),
            ("W2", (200, 27)),
            ("b2", (27,)),
        )
    }
    cases = [
        (spec(init={"W1": "kaiming"}), "W1", randn["W1"] * (5 / 3) / 30**0.5),
        (spec(init={"W1": "kaiming"}, activation="relu"), "W1", randn["W1"] * 2**0.5 / 30**0.5),
        (spec(init={"W1": {"kaiming": {"gain": 0.7}}}), "W1", randn["W1"] * 0.7 / 30**0.5),
        (spec(init={"W2": "xavier"}), "W2", randn["W2"] * (2 / (200 + 27)) ** 0.5),
        (spec(init={"W2": {"xavier": {"gain": 2.0}}}), "W2", randn["W2"] * 2 * (2 / 227) ** 0.5),
        (spec(init={"b1": 0.5}), "b1", randn["b1"] * 0.5),
        (spec(init={}), "C", randn["C"]),
        (spec(init={"b2": "zeros"}), "b2", torch.zeros(27)),
        (spec(init={"W1": {"constant": 0.1}}), "W1", torch.full((30, 200), 0.1)),
    ]
    for variant, name, expected in cases:
        weights, generator = draw(LECTURE_SEED, variant, 27, 3, 10, 200)
        assert torch.equal(weights[name], expected), (variant.init, name)
        # every tensor drawn, whatever its scheme: the minibatches that follow are the same
        assert torch.equal(generator.get_state(), g.get_state())
    assert set(draw(LECTURE_SEED, spec(norm="batchnorm"), 27, 3, 10, 200)[0]) == {
        "C",
        "W1",
        "W2",
        "b2",
        "norm_gain",
        "norm_bias",  # BatchNorm's bias replaces b1
    }
