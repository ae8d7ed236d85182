"""Stage deep@<config>: a short run of the lecture's deep network, and its instruments.

Writes metrics/deep/<config>.json, four figures in reports/figures/deep/ and an MLflow run
named "deep <config>".
"""

import dataclasses
import math
import time
from pathlib import Path

import click
import torch

from actgrad.config import ParamsError
from actgrad.deep import run_deep
from actgrad.diagnostics import block_means
from actgrad.plots import density_panels_figure, depth_color, update_ratio_figure
from actgrad.train import Diverged

from .common import (
    atomic_path,
    load_split,
    load_vocab,
    log,
    log_values,
    mlflow_client,
    mlflow_run,
    read_params,
    run_stage,
    run_tags,
    stage_command,
    write_json,
)

FIGURES = Path("reports/figures/deep")
KINDS = ("activations", "gradients", "weight_grads", "update_ratio")
SERIES_EVERY = 10  # MLflow gets each per-step curve as the mean of every 10 steps


def block_series(values):
    """[(first step of the block, mean)] of per-step `values` (from step 1), finite means only."""
    values = torch.tensor(values, dtype=torch.float64)
    means = block_means(values, range(len(values)), SERIES_EVERY)
    return [(k * SERIES_EVERY + 1, v) for k, v in enumerate(means.tolist()) if math.isfinite(v)]


def finite(value):
    return value if value is not None and math.isfinite(value) else None


def describe(cfg, train):
    layers = "Linear" + " → BatchNorm1d" * cfg.batchnorm + " → Tanh" * cfg.tanh
    return f"{train.n_layers} × ({layers}), gain {cfg.gain:.3g}"


def metrics_of(result):
    """The JSON: losses, and each read-out's numbers (init, and final unless training diverged)."""
    return {
        "init_loss": result.losses[0],
        "final_batch_loss": result.losses[-1],
        "train_loss": result.train_loss,
        "steps_run": len(result.losses),
        "diverged_at_step": result.diverged_at,
        "update_ratio_log10": {k: finite(v[-1]) for k, v in result.update_ratios.items()},
        "init": {"layers": result.init.layers, "weights": result.init.weights},
        "final": result.final and {"layers": result.final.layers, "weights": result.final.weights},
    }


def flat_numbers(metrics):
    """Every number of the JSON as one MLflow metric, e.g. final.tanh1.act_std."""
    flat = {}
    for key, value in metrics.items():
        if isinstance(value, dict):
            flat.update({f"{key}.{k}": v for k, v in flat_numbers(value).items()})
        elif isinstance(value, int | float) and finite(value) is not None:
            flat[key] = value
    return flat


def legends(readout, kind):
    """{legend label: histogram} of one read-out, with each curve's numbers in its label."""
    hists = readout.histograms[kind]
    if kind == "weight_grads":
        return {
            f"{w['label']}: grad std {w['grad_std']:.1e}, grad:data {w['grad_data_ratio']:.1e}": h
            for w, h in zip(readout.weights.values(), hists.values())
        }
    labels = []
    for layer in readout.layers.values():
        if kind == "gradients":
            labels.append(
                f"{layer['label']}: mean {layer['grad_mean']:+.1e}, std {layer['grad_std']:.1e}"
            )
        else:
            sat = layer["saturated_pct"]
            label = f"{layer['label']}: mean {layer['act_mean']:+.2f}, std {layer['act_std']:.2f}"
            if sat is not None:
                label += f", saturated {sat:.1f}%, tanh input std {layer['preact_std']:.2f}"
            labels.append(label)
    return dict(zip(labels, hists.values()))


def write_figures(name, cfg, train, result):
    """The four PNGs; returns their paths."""
    n = train.n_layers
    layer_colors = [depth_color(d) for d in range(1, n + 1)]
    weight_colors = ["black"] + [depth_color(d) for d in range(1, n + 2)]  # C, W1 ... output
    title = f"{name}: {{}}\n{describe(cfg, train)}"
    if result.diverged_at:
        title += f", diverged at step {result.diverged_at}"
    histograms = {  # kind: (what, x label, colours, log-scale density)
        "activations": ("hidden layer outputs", "activation value", layer_colors, False),
        "gradients": ("gradients of the hidden layer outputs", "gradient", layer_colors, False),
        "weight_grads": ("gradients of the weight matrices", "gradient", weight_colors, True),
    }
    paths = {kind: FIGURES / f"{name}_{kind}.png" for kind in KINDS}
    for kind, (what, xlabel, colors, logy) in histograms.items():
        panels = {
            "at init (step 1)": legends(result.init, kind),
            f"after step {train.steps}": legends(result.final, kind)
            if result.final
            else f"training diverged at step {result.diverged_at} (loss not finite):\n"
            "nothing to read out",
        }
        with atomic_path(paths[kind]) as tmp:
            density_panels_figure(panels, colors, title.format(what), xlabel, tmp, logy)
    ratios = {
        w["label"]: r for w, r in zip(result.init.weights.values(), result.update_ratios.values())
    }
    with atomic_path(paths["update_ratio"]) as tmp:
        update_ratio_figure(
            range(1, len(result.losses) + 1),
            ratios,
            title.format(f"update:data ratio per step, lr {train.lr:g}"),
            tmp,
            colors=dict(zip(ratios, weight_colors)),
            legend_below=True,
        )
    return list(paths.values())


@click.command()
@click.argument("config")
@click.option("--data", default="data/split", show_default=True)
@stage_command
def main(config, data):
    params = read_params()
    if config not in params.deep:
        raise ParamsError(f"deep.{config}: no such config; choose one of {sorted(params.deep)}")
    cfg, train = params.deep[config], params.deep_train
    client, exp_id = mlflow_client()
    X, Y = load_split(data, "train")
    vocab_size = len(load_vocab(data))
    torch.set_num_threads(1)
    log(f"deep@{config}: {describe(cfg, train)}, {train.steps:,} steps")
    started = time.time()

    run_params = {f"deep.{k}": v for k, v in dataclasses.asdict(cfg).items()}
    run_params.update({f"deep_train.{k}": v for k, v in dataclasses.asdict(train).items()})
    with mlflow_run(client, exp_id, f"deep {config}", run_tags(deep_config=config)) as run_id:
        try:
            result = run_deep(cfg, train, X, Y, vocab_size)
        except Diverged as e:
            raise click.ClickException(
                f"deep@{config}: {e}; lower deep.{config}.gain or deep_train.lr"
            ) from None
        metrics = metrics_of(result)
        figures = write_figures(config, cfg, train, result)
        write_json(f"metrics/deep/{config}.json", metrics)

        curves = {f"update_ratio_log10.{k}": r for k, r in result.update_ratios.items()}
        curves["batch_loss"] = result.losses
        series = {key: block_series(values) for key, values in curves.items()}
        numbers = flat_numbers({k: v for k, v in metrics.items() if k != "update_ratio_log10"})
        log_values(client, run_id, numbers, run_params, series)  # the series end on those
        for path in [*figures, Path(f"metrics/deep/{config}.json")]:
            client.log_artifact(run_id, path)
    outcome = (
        f"diverged at step {result.diverged_at}"
        if result.diverged_at
        else f"train loss {result.train_loss:.4f}"
    )
    log(f"deep@{config}: done in {time.time() - started:.0f}s, {outcome}")


if __name__ == "__main__":
    run_stage(main)
