"""Stage demos: the lecture's small demonstrations, which train nothing or a softmax regression
for a few thousand steps. What the loss at init should be (a 4-class toy, then W2's scale on the
first minibatch at the lecture seed), why a weight is scaled by 1/√fan_in (`x @ w`), and d2l
5.4's exercise 2: softmax regression trains from every weight equal as from a random start.

Writes the numbers to a metrics JSON and three figures; logs a run named "demos".
"""

import math

import torch

from actgrad.demos import (
    first_batch_losses,
    four_class_losses,
    regression_loss,
    scaled_products,
    softmax_regression,
)
from actgrad.plots import bars_figure, histograms_figure, loss_curve_figure
from actgrad.recipes import read_params
from actgrad.stats import block_means

from ..files import Json, Png, Split
from ..runner import Stage
from ..tracking.records import Plan, flatten, log_files, numbers
from ..tracking.store import log_values


def compute(params, split):
    demos, seed, (X, Y) = params.demos, params.train.seeds[0], split["train"]
    vocab = len(split["vocab"])
    toy = four_class_losses(demos.confident)
    sizes = (vocab, X.shape[1], params.train.n_embd, params.train.n_hidden)
    recipe = params.variant(demos.variant)
    batch = params.train.batch_size
    sweep = first_batch_losses(recipe, seed, X, Y, batch, demos.w2_scales, sizes)
    products, stds, labels = weight_scales(demos.x_w, seed)
    regression = {
        start: softmax_regression(X, Y, vocab, start, demos.softmax_regression, seed)
        for start in ("equal", "random")
    }
    metrics = {
        "four_class": toy | {"ideal": math.log(4)},
        "first_batch_loss_by_w2_scale": {f"{scale:g}": loss for scale, loss in sweep.items()},
        "ideal_init_loss": math.log(vocab),
        "x_w_std": stds,
        "softmax_regression": {
            start: regression_metrics(run, split, vocab) for start, run in regression.items()
        },
    }
    return {
        "metrics": metrics,
        "init_loss_figure": bars_figure(
            {
                "4 classes: the loss of three logit vectors": {
                    key.replace("_", ", "): loss for key, loss in toy.items()
                },
                f"the first minibatch at seed {seed}, by W2's scale": {
                    f"W2 × {scale:g}": loss for scale, loss in sweep.items()
                },
            },
            "the loss at init",
            guides={
                "4 classes: the loss of three logit vectors": ("ln 4", math.log(4)),
                f"the first minibatch at seed {seed}, by W2's scale": (
                    f"ln {vocab}",
                    math.log(vocab),
                ),
            },
        ),
        "weight_scale_figure": histograms_figure(
            {f"{labels[k]}: std {stds[k]:.3g}": y.flatten().tolist() for k, y in products.items()},
            f"x @ w: x ({demos.x_w.examples} × {demos.x_w.fan_in}) and w from randn",
        ),
        "regression_figure": regression_figure(regression, demos.softmax_regression),
    }


def weight_scales(cfg, seed):
    """({key: x @ (w × scale)}, x's first, their stds, and the words for each key)."""
    scales = {f"w_times_{scale:g}": scale for scale in cfg.scales}
    scales["w_over_sqrt_fan_in"] = 1 / math.sqrt(cfg.fan_in)
    scales["w_times_gain_over_sqrt_fan_in"] = cfg.gain / math.sqrt(cfg.fan_in)
    labels = {"x": "x"} | {f"w_times_{scale:g}": f"x @ (w × {scale:g})" for scale in cfg.scales}
    labels["w_over_sqrt_fan_in"] = "x @ w / √fan_in"
    labels["w_times_gain_over_sqrt_fan_in"] = f"x @ w × {cfg.gain:.3g} / √fan_in"
    products = scaled_products(seed, cfg.examples, cfg.fan_in, cfg.fan_out, scales)
    return products, {key: y.std().item() for key, y in products.items()}, labels


def regression_metrics(run, split, vocab):
    losses, weights, distinct = run
    return {
        "distinct_columns_after_one_step": distinct,
        "first_loss": losses[0],
        "train_loss": regression_loss(weights, *split["train"], vocab),
        "val_loss": regression_loss(weights, *split["val"], vocab),
    }


def regression_figure(regression, cfg):
    every = max(1, cfg.steps // 100)
    curves = {}
    for start, (losses, _, _) in regression.items():
        means = block_means(torch.tensor(losses).log10(), range(len(losses)), every)
        curves[f"from {start} weights"] = means.tolist()
    return loss_curve_figure(
        curves,
        list(range(0, cfg.steps, every)),
        f"softmax regression on one-hot contexts: log10 loss, mean per {every} steps",
    )


def runs(params, key):
    return Plan(name="demos", dataset=True)


def log_runs(client, runs, made):
    run_params = flatten({"demos": made.params.demos.model_dump()})
    log_values(client, runs.top, numbers(made.values["metrics"]), run_params)
    log_files(client, runs.top, [made.paths[role] for role in STAGE.outputs])


STAGE = Stage(
    name="demos",
    params=read_params,
    compute=compute,
    inputs={"split": Split, "summary": Json},
    outputs={
        "metrics": Json,
        "init_loss_figure": Png,
        "weight_scale_figure": Png,
        "regression_figure": Png,
    },
    runs=runs,
    log_runs=log_runs,
    summary=lambda made: (
        "the loss at init of W2 × "
        + ", ".join(
            f"{k}: {v:.3f}"
            for k, v in made.values["metrics"]["first_batch_loss_by_w2_scale"].items()
        )
    ),
)

if __name__ == "__main__":
    STAGE.main()
