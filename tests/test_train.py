"""The engine against the lecture's own loop, and the properties its batching must keep."""

import math

import pytest
import torch
import torch.nn.functional as F
import yaml
from conftest import LECTURE_SEED, ROOT
from lecture import RECIPES, lecture_loop

from actgrad.compute import tasks
from actgrad.errors import Diverged
from actgrad.mlp.engine import train
from actgrad.mlp.network import init_weights, one_unit, seed_losses
from actgrad.mlp.training import train_seeds
from actgrad.recipes import load_params

PARAMS = load_params(yaml.safe_load((ROOT / "params.yaml").read_text()))


def config(steps, seeds, **changes):
    """The study's train config for a short run: lr decays halfway, as the lecture's does."""
    optimizer = PARAMS.train.optimizer.model_copy(update=dict(decay_step=steps // 2))
    cfg = PARAMS.train.model_copy(
        update=dict(steps=steps, seeds=seeds, curve_every=100, optimizer=optimizer)
    )
    return cfg.model_copy(update=changes)


def variant(name, cfg):
    return PARAMS.variant(name).model_copy(update=dict(optimizer=cfg.optimizer))


def engine(X, Y, name, seeds, steps=300):
    cfg = config(steps, seeds)
    v = variant(name, cfg)
    weights, generators = init_weights(seeds, v, 27, 3, 10, 200)
    return weights, train(weights, generators, X, Y, cfg, v)


@pytest.mark.parametrize("name", ["softmax_fix", "tanh_fix", "kaiming", "batchnorm"])
def test_engine_follows_the_lecture_loop_step_by_step(splits, name):
    """params.yaml's spec of each lecture recipe is the notebook's code, step for step."""
    X, Y = splits[1]["train"]
    expected, _, (bn_mean, bn_std) = lecture_loop(X, Y, RECIPES[name], 300, 150)
    weights, result = engine(X, Y, name, (LECTURE_SEED,))
    torch.testing.assert_close(result.losses[0], expected, rtol=0, atol=1e-5)
    if name == "batchnorm":  # the running statistics, against the notebook's update
        torch.testing.assert_close(weights.running["mean"][0], bn_mean, rtol=1e-4, atol=1e-5)
        torch.testing.assert_close(weights.running["std"][0], bn_std, rtol=1e-4, atol=1e-5)


def test_baseline_follows_the_lecture_loop_until_rounding_grows(splits):
    # The baseline's huge logits amplify float rounding differences (our tanh is computed as
    # 2 sigmoid(2a) - 1), so its trajectory drifts from the notebook's within ~100 steps.
    X, Y = splits[1]["train"]
    expected, _, _ = lecture_loop(X, Y, RECIPES["baseline"], 20, 10)
    _, result = engine(X, Y, "baseline", (LECTURE_SEED,), steps=20)
    torch.testing.assert_close(result.losses[0], expected, rtol=1e-4, atol=0)


@pytest.mark.parametrize("name", ["kaiming", "batchnorm", "adam"])
def test_a_seed_trains_the_same_alone_or_among_others(splits, name):
    X, Y = splits[1]["train"]
    alone_w, alone = engine(X, Y, name, (LECTURE_SEED,))
    batch_w, batch = engine(X, Y, name, (3, LECTURE_SEED, 1, 2, 4))
    assert torch.equal(batch.losses[1], alone.losses[0])
    for tensor in alone_w.params:
        assert torch.equal(batch_w.params[tensor][1], alone_w.params[tensor][0]), tensor
    for stat in alone_w.running:
        assert torch.equal(batch_w.running[stat][1], alone_w.running[stat][0]), stat


def test_five_seeds_give_the_same_bits_as_one_task_or_as_five_on_a_cluster(splits):
    """One group of five seeds in this process, and five groups of one seed on a LocalCluster
    of two worker processes: bit for bit the same, and so is every number computed from them."""
    X, Y = splits[1]["train"]
    cfg = config(200, (LECTURE_SEED, 1, 2, 3, 4))
    v = variant("batchnorm", cfg)
    with tasks() as here:
        one_w, one = train_seeds(cfg.seeds, v, cfg, X, Y, 27, here)
    with tasks(workers=2, group_size=1) as cluster:
        five_w, five = train_seeds(cfg.seeds, v, cfg, X, Y, 27, cluster)
        assert len({p.worker for p in cluster.placements}) == 2
    assert five_w.seeds == cfg.seeds
    for field in vars(one):
        assert torch.equal(getattr(one, field), getattr(five, field)), field
    for name in one_w.params:
        assert torch.equal(one_w.params[name], five_w.params[name]), name
    assert torch.equal(one_w.running["mean"], five_w.running["mean"])
    Xv, Yv = splits[1]["val"]
    assert seed_losses(one_w, v, Xv, Yv) == seed_losses(five_w, v, Xv, Yv)
    assert seed_losses(one_unit(one_w), v, Xv, Yv) == seed_losses(one_unit(five_w), v, Xv, Yv)


def test_the_trained_weights_give_the_lecture_loops_val_loss(splits):
    """Every seed's val loss, from the weights the engine trained, is the one the lecture's loop
    reaches with that seed."""
    (X, Y), (Xv, Yv) = splits[1]["train"], splits[1]["val"]
    weights, result = engine(X, Y, "kaiming", (LECTURE_SEED, 7), steps=500)
    ours = seed_losses(weights, PARAMS.variant("kaiming"), Xv, Yv)
    for seed, loss in zip((LECTURE_SEED, 7), ours):
        _, (C, W1, W2, b2, b1), _ = lecture_loop(X, Y, RECIPES["kaiming"], 500, 250, seed=seed)
        with torch.no_grad():
            logits = torch.tanh(C[Xv].view(len(Xv), -1) @ W1 + b1) @ W2 + b2
        assert loss == pytest.approx(F.cross_entropy(logits, Yv).item(), abs=1e-4)
    assert (result.losses[:, :50].mean(1) > result.losses[:, -50:].mean(1) + 0.2).all()


def test_divergence_stops_at_the_first_bad_step_naming_seed_and_step(splits):
    X, Y = splits[1]["train"]
    cfg = config(300, (LECTURE_SEED, 5))
    v = PARAMS.variant("baseline").model_copy(
        update=dict(optimizer=cfg.optimizer.model_copy(update=dict(lr=100.0)))
    )
    weights, generators = init_weights(cfg.seeds, v, 27, 3, 10, 200)
    with pytest.raises(Diverged) as e:
        train(weights, generators, X, Y, cfg, v)
    # the same run with no limit, up to that step: the first whose loss of any seed passes
    # max_loss is that one
    weights, generators = init_weights(cfg.seeds, v, 27, 3, 10, 200)
    unlimited = cfg.model_copy(update=dict(max_loss=math.inf, steps=e.value.step + 1))
    losses = train(weights, generators, X, Y, unlimited, v).losses  # (seeds, steps)
    bad = ~(losses <= cfg.max_loss)
    step = int(bad.any(0).nonzero()[0])
    seed = cfg.seeds[int(bad[:, step].nonzero()[0])]
    assert (e.value.seed, e.value.step) == (seed, step)
    assert e.value.loss == losses[cfg.seeds.index(seed), step].item()
    assert f"seed {seed} diverged at step {step}" in str(e.value)
