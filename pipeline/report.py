"""Stage report: reports/comparison.md, one row per variant plus calibrate, and every variant's
loss curve in one long CSV (reports/loss_curves.csv) for `dvc plots show`."""

import csv
import json
from pathlib import Path

import click
import pandas as pd
import yaml

from actgrad.plots import loss_curve_figure, variant_color
from actgrad.report import SIGNIFICANCE, comparison_table, deep_table, instruments_table

from . import records
from .outputs import atomic_path, write_text
from .params import read_params
from .stage import log, run_stage, stage_command
from .tracking import mlflow_client


def read_rows(params, metrics_dir):
    """(name, metrics) for every variant in params order, then calibrate."""
    names = [*params.variants, "calibrate"]
    return [(n, json.loads((Path(metrics_dir) / f"{n}.json").read_text())) for n in names]


def read_curves(params, metrics_dir):
    """{variant: [(step, log10 loss as written)]} from every train stage's curve CSV."""
    curves = {}
    for name in params.variants:
        with open(Path(metrics_dir) / "curves" / f"{name}.csv") as f:
            curves[name] = [(int(r["step"]), r["log10_loss"]) for r in csv.DictReader(f)]
    return curves


def long_curves(curves):
    """variant,step,log10_loss rows of every variant's curve, for one overlay plot."""
    rows = ["variant,step,log10_loss"]
    rows += [f"{name},{step},{value}" for name, points in curves.items() for step, value in points]
    return "\n".join(rows) + "\n"


def samples_section(names, samples_dir):
    """Every variant's sampled names side by side."""
    columns = {n: (Path(samples_dir) / f"{n}.txt").read_text().split() for n in names}
    return pd.DataFrame(columns).to_markdown(index=False)


@click.command()
@click.option("--metrics", "metrics_dir", default="metrics", show_default=True)
@click.option("--expected", default="expected.yaml", show_default=True)
@click.option("--samples", "samples_dir", default="reports/samples", show_default=True)
@stage_command
def main(metrics_dir, expected, samples_dir):
    params = read_params()
    record = records.report(params)
    out, curves, figure = (record.outputs[k] for k in ("comparison", "curves", "figure"))
    client, exp_id = mlflow_client()
    log(f"report: {len(params.variants)} variants and calibrate from {metrics_dir}/")
    rows = read_rows(params, metrics_dir)
    variants = rows[:-1]
    calibrate = rows[-1][1]
    table = comparison_table(rows, yaml.safe_load(open(expected)))
    points = read_curves(params, metrics_dir)
    curves_text = long_curves(points)
    with atomic_path(figure) as tmp:
        loss_curve_figure(
            {n: [float(value) for _, value in curve] for n, curve in points.items()},
            [step for step, _ in points[next(iter(points))]],
            f"log10 loss, mean per {params.train.curve_every} steps, seed {params.train.seeds[0]}",
            tmp,
            colors={n: variant_color(n) for n in params.variants},
        )
    seeds = params.train.seeds
    figures = Path(figure).parent.relative_to(Path(out).parent)
    deep_rows = [
        (n, json.loads((Path(metrics_dir) / "deep" / f"{n}.json").read_text())) for n in params.deep
    ]
    deep_figures = "\n\n".join(
        " ".join(f"![{n} {k}]({figures}/deep/{n}_{k}.png)" for k in records.DEEP_FIGURES)
        for n in params.deep
    )
    init_figures = "\n".join(f"![{n} at init]({figures}/{n}_init.png)" for n in params.variants)
    ud_figures = "\n".join(
        f"![{n} update:data]({figures}/{n}_update_ratio.png)" for n in params.variants
    )
    text = f"""# Activations, gradients and BatchNorm: train/val loss per init recipe

Seed {seeds[0]} (the lecture's) for the single-seed columns; mean ± sd over seeds {list(seeds)}.
`calibrate` evaluates the `{params.calibrate.variant}` model with BatchNorm statistics measured
once over the whole training set instead of the running ones.
`Δ val` is the change from the row above; `lecture val` is the lecture's published number and
`within tol` says whether ours matches it within the tolerance in `expected.yaml`.
`beats noise`: one-sided Welch's t-test that the row's per-seed val losses have a lower mean
than the row above's, at p < {SIGNIFICANCE}.

{table.to_markdown(index=False, disable_numparse=True)}

![loss curves]({figures}/{Path(figure).name})

## The instruments, at seed {seeds[0]}

At initialisation, on the first minibatch: the loss against the ideal -log(1/27), the share of
hidden units with |tanh| > 0.99 (their gradient is almost zero) and the neurons saturated for
every example of the batch (dead). During training: log10 of std(lr·grad) / std(weight), the
update:data ratio, averaged over the first 1,000 steps (the lecture's rule of thumb: about -3).

{instruments_table(variants).to_markdown(index=False, disable_numparse=True)}

{init_figures}

{ud_figures}

## BatchNorm: running vs calibrated statistics

Largest gap over the {len(calibrate["seeds"])} seeds' neurons: mean
{calibrate["mean"]["mean_max_abs_diff"]:.4f} (absolute), std
{calibrate["mean"]["std_max_rel_diff"]:.2%} (relative); val loss with running statistics
{calibrate["running_val_loss"]:.4f}, calibrated {calibrate["val_loss"]:.4f} (seed {seeds[0]}).

![BatchNorm calibration]({figures}/bn_calibration.png)

## Names sampled from each model (seed {seeds[0]})

{samples_section(params.variants, samples_dir)}

## The deep network: {params.deep_train.n_layers} hidden layers of {params.deep_train.n_hidden}

Each `deep` config trains {params.deep_train.steps:,} steps; every cell reads "at init → after
the last step" for the hidden layer's output (after its Tanh, or its Linear in the linear-only
stacks): saturated means |t| > 0.97, grad is the gradient of the layer's output, and weight
grad:data is std(grad) / std(weight) of the Linear feeding the layer.

{deep_table(deep_rows)}

{deep_figures}
"""
    write_text(out, text)
    write_text(curves, curves_text)
    with records.open_runs(client, exp_id, record, params) as runs:
        records.log_outputs(client, runs, record, params)
    log(f"report: wrote {out}, {curves} and {figure}")


if __name__ == "__main__":
    run_stage(main)
