"""Stage deep@<config>: a short run of the lecture's deep network, and its instruments.

Writes metrics/deep/<config>.json, its curves to metrics/series/deep/<config>.csv, four
figures in reports/figures/deep/ and an MLflow run named "deep <config>".
"""

import math
import time

import click
import torch

from actgrad.config import ParamsError
from actgrad.deep import run_deep
from actgrad.diagnostics import block_means
from actgrad.errors import Diverged
from actgrad.plots import (
    density_panels_figure,
    depth_color,
    spectrum_figure,
    update_ratio_figure,
)

from . import records
from .inputs import load_split, load_vocab
from .outputs import atomic_path, write_csv, write_json
from .params import read_params
from .stage import log, run_stage, stage_command
from .tracking import mlflow_client

SERIES_EVERY = 10  # each per-step curve is kept as the mean of every 10 steps


def curve_rows(curves):
    """Rows (first step of the block, mean of each curve) of per-step curves (from step 1)."""
    values = torch.tensor(list(curves.values()), dtype=torch.float64).T
    means = block_means(values, range(len(values)), SERIES_EVERY).tolist()
    return [(k * SERIES_EVERY + 1, *row) for k, row in enumerate(means)]


def finite(value):
    return value if value is not None and math.isfinite(value) else None


def describe(cfg, train):
    layers = "Linear" + " → BatchNorm1d" * cfg.batchnorm + f" → {cfg.activation.name}"
    return f"{train.n_layers} × ({layers}), gain {cfg.gain:.3g}, {cfg.optimizer.name}"


def spread_only(spectra):
    """The spectra without the singular values themselves (they go to the figure)."""
    return spectra and {k: v for k, v in spectra.items() if k != "values"}


def metrics_of(result, cfg):
    """The JSON: losses, each read-out's numbers (init, and final unless training diverged) and
    the spread of the singular values at both."""
    losses = result.split_losses or {}
    return {
        "optimizer": cfg.optimizer.name,
        "init_loss": result.losses[0],
        "final_batch_loss": result.losses[-1],
        "train_loss": losses.get("train"),
        "val_loss": losses.get("val"),
        "steps_run": len(result.losses),
        "diverged_at_step": result.diverged_at,
        "update_ratio_log10": {k: finite(v[-1]) for k, v in result.update_ratios.items()},
        "init": {"layers": result.init.layers, "weights": result.init.weights},
        "final": result.final and {"layers": result.final.layers, "weights": result.final.weights},
        "spectra": {moment: spread_only(s) for moment, s in result.spectra.items()},
    }


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


def write_figures(name, cfg, train, result, paths):
    """The four PNGs, to paths {kind: path} for every kind of records.DEEP_FIGURES."""
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
            title.format("update:data ratio per step, std(θ after - θ before) / std(θ after)"),
            tmp,
            colors=dict(zip(ratios, weight_colors)),
            legend_below=True,
        )
    spectra = {"init": result.spectra["init"]["values"]}
    if result.spectra["final"]:
        spectra[f"after step {train.steps}"] = result.spectra["final"]["values"]
    panels = {
        "the hidden stack's Jacobian, each example": {
            moment: values["jacobian"] for moment, values in spectra.items()
        },
        f"hidden weights W2 ... W{n}": {
            moment: [
                x for k, v in values.items() if k not in ("jacobian", "W1", f"W{n + 1}") for x in v
            ]
            for moment, values in spectra.items()
        },
    }
    with atomic_path(paths["spectrum"]) as tmp:
        spectrum_figure(panels, title.format("singular values"), tmp)


@click.command()
@click.argument("config")
@click.option("--data", default="data/split", show_default=True)
@stage_command
def main(config, data):
    params = read_params()
    if config not in params.deep:
        raise ParamsError(f"deep.{config}: no such config; choose one of {sorted(params.deep)}")
    cfg, train = params.deep[config], params.deep_train
    record = records.deep(params, config)
    client, exp_id = mlflow_client()
    splits = {name: load_split(data, name) for name in ("train", "val")}
    vocab_size = len(load_vocab(data))
    torch.set_num_threads(1)
    log(f"deep@{config}: {describe(cfg, train)}, {train.steps:,} steps")
    started = time.time()

    with records.open_runs(client, exp_id, record, params) as runs:
        try:
            result = run_deep(cfg, train, splits, vocab_size)
        except Diverged as e:
            raise click.ClickException(
                f"deep@{config}: {e}; lower deep.{config}.gain or its optimizer's lr"
            ) from None
        outputs = record.outputs
        write_figures(config, cfg, train, result, {k: outputs[k] for k in records.DEEP_FIGURES})
        write_json(outputs["metrics"], metrics_of(result, cfg))
        curves = {"batch_loss": result.losses}
        curves |= {f"update_ratio_log10.{k}": r for k, r in result.update_ratios.items()}
        write_csv(outputs["series"], ["step", *curves], curve_rows(curves))
        records.log_outputs(client, runs, record, params)
    losses = result.split_losses
    outcome = losses and f"train {losses['train']:.4f} val {losses['val']:.4f}"
    outcome = outcome or f"diverged at step {result.diverged_at}"
    log(f"deep@{config}: done in {time.time() - started:.0f}s, {outcome}")


if __name__ == "__main__":
    run_stage(main)
