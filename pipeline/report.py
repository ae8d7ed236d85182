"""Stage report: reports/comparison.md, the lecture's table and the one beyond it, the
instruments, and a section answering each of the exercises' questions; every variant's loss
curve in one long CSV (reports/loss_curves.csv) for `dvc plots show`, and their overlay."""

import csv
import json
from pathlib import Path

import click
import pandas as pd
import yaml

from actgrad import answers
from actgrad.plots import loss_curve_figure, variant_color
from actgrad.report import (
    SIGNIFICANCE,
    beyond_table,
    comparison_table,
    conditioning_table,
    deep_table,
    drift,
    instruments_table,
    optimizer_table,
)

from . import records
from .outputs import atomic_path, write_text
from .params import read_params
from .stage import log, run_stage, stage_command
from .tracking import mlflow_client


def read_json(path):
    return json.loads(Path(path).read_text())


def drift_table(checks):
    rows = [
        {
            "number": f"{c['row'].removeprefix('deep/')}: {c['metric']}",
            "notebook": f"{c['expected']:.6g}",
            "ours": "missing" if c["measured"] is None else f"{c['measured']:.6g}",
            "tol": f"{c['tol']:g}",
            "ok": "yes" if c["ok"] else "NO",
        }
        for c in checks
    ]
    return pd.DataFrame(rows)


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
    columns = {n: (Path(samples_dir) / f"{n}.txt").read_text().splitlines() for n in names}
    return pd.DataFrame(columns).to_markdown(index=False)


def table(frame):
    return frame.to_markdown(index=False, disable_numparse=True)


def figures_line(names, kind, folder):
    return " ".join(f"![{n} {kind}]({folder}/{n}_{kind}.png)" for n in names)


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
    log(f"report: {len(params.variants)} variants, {len(params.deep)} deep configs")
    metrics = {
        n: read_json(Path(metrics_dir) / f"{n}.json")
        for n in [*params.variants, "calibrate", "fold"]
    }
    deep = {n: read_json(Path(metrics_dir) / "deep" / f"{n}.json") for n in params.deep}
    spec = yaml.safe_load(open(expected))
    report, seeds = params.report, params.train.seeds
    lecture = [(n, metrics[n]) for n in report.lecture] + [("calibrate", metrics["calibrate"])]
    beyond = [(n, metrics[n]) for n in params.variants if n not in report.lecture]
    variants = [(n, metrics[n]) for n in params.variants]
    points = read_curves(params, metrics_dir)
    with atomic_path(figure) as tmp:
        loss_curve_figure(
            {n: [float(value) for _, value in curve] for n, curve in points.items()},
            [step for step, _ in points[next(iter(points))]],
            f"log10 loss, mean per {params.train.curve_every} steps, seed {seeds[0]}",
            tmp,
            colors={n: variant_color(n) for n in params.variants},
        )
    figures = Path(figure).parent.relative_to(Path(out).parent)
    deep_rows = list(deep.items())
    checks = drift(spec, {f"deep/{n}": m for n, m in deep.items()})
    notebook_checks = [c for c in checks if c["row"].startswith("deep/")]
    sections = [
        f"""# Activations, gradients and BatchNorm: train/val loss per init recipe

Seed {seeds[0]} (the lecture's) for the single-seed columns; mean ± sd over seeds {list(seeds)}.
`calibrate` evaluates the `{params.calibrate.variant}` model with BatchNorm statistics measured
once over the whole training set instead of the running ones.
`Δ val` is the change from the row above; `lecture val` is the lecture's published number and
`within tol` says whether ours matches it within the tolerance in `expected.yaml`.
`beats noise`: one-sided Welch's t-test that the row's per-seed val losses have a lower mean
than the row above's, at p < {SIGNIFICANCE}.

{table(comparison_table(lecture, spec))}

![loss curves]({figures}/{Path(figure).name})""",
        f"""## Beyond the lecture

Each variant against the one it changes (`report.compare` in params.yaml): mean ± sd over the
{len(seeds)} seeds, the change in mean val loss, and a two-sided Welch's t-test on the per-seed
val losses (p < {SIGNIFICANCE}: better or worse; otherwise no difference beyond the seeds' noise).

{table(beyond_table(beyond, metrics, report.compare))}""",
        f"""## The instruments, at seed {seeds[0]}

At initialisation, on the first minibatch: the loss against the ideal -log(1/27) =
{metrics[report.lecture[0]]["init_ideal_loss"]:.4f}, the share of hidden units that are
inactive (each activation's own rule, `inactive when`: they pass almost no gradient) and the
units inactive for every example of the batch. During training, every
{params.train.units_every:,} steps: the units inactive on every context of the training split
(dead), the most at any count and at the end, and the distinct hidden units (different W1
column and b1). The update:data ratio is log10 std(θ after − θ before) / std(θ after), the
real update of whatever optimizer, averaged over the first 1,000 steps (the lecture's rule of
thumb: about -3); n/a when θ never moved, or its entries are all equal (std 0), as zero and
constant init make them.

{table(instruments_table(variants))}

{figures_line(params.variants, "init", figures)}

{figures_line(params.variants, "update_ratio", figures)}

{figures_line(params.variants, "units", figures)}""",
        f"""## BatchNorm: running vs calibrated statistics

Largest gap over the {len(metrics["calibrate"]["seeds"])} seeds' neurons: mean
{metrics["calibrate"]["mean"]["mean_max_abs_diff"]:.4f} (absolute), std
{metrics["calibrate"]["mean"]["std_max_rel_diff"]:.2%} (relative); val loss with running
statistics {metrics["calibrate"]["running_val_loss"]:.4f}, calibrated
{metrics["calibrate"]["val_loss"]:.4f} (seed {seeds[0]}).

![BatchNorm calibration]({figures}/bn_calibration.png)""",
    ]
    if report.zero_init:
        name = report.zero_init
        sections.append(
            f"""## 1. Zero init (the lecture's exercise E01)

{answers.zero_init(name, metrics[name])}

![{name} units]({figures}/{name}_units.png)"""
        )
    if report.symmetry:
        constant, broken = report.symmetry
        sections.append(
            f"""## 2. Symmetry (d2l 5.4, exercises 1 and 2)

{answers.symmetry(constant, metrics[constant], broken, metrics[broken])}

{figures_line(report.symmetry, "units", figures)}"""
        )
    sections.append(
        f"""## 3. BatchNorm folded into the Linear before it (the lecture's exercise E02)

{answers.fold(params.calibrate.variant, metrics["fold"], params.train.n_hidden)}"""
    )
    if report.deep_compare:
        pairs = [((n, deep[n]), (other, deep[other])) for n, other in report.deep_compare.items()]
        rows = [row for pair in pairs for row in pair]
        sections.append(
            f"""## 4. LARS on the deep stacks that diverge (d2l 5.4, exercise 4)

{answers.lars(pairs)}

{table(optimizer_table(rows))}

{" ".join(f"![{n} update:data]({figures}/deep/{n}_update_ratio.png)" for n, _ in rows)}"""
        )
    # the configs that differ only in their optimizer start alike: compare the others
    plain_deep = [(n, m) for n, m in deep_rows if n not in report.deep_compare]
    tanh_gains = {
        n: c.gain
        for n, c in params.deep.items()
        if c.activation.name == "tanh" and not c.batchnorm and n not in report.deep_compare
    }
    sections.append(
        f"""## 5. Conditioning (d2l 5.4, exercise 3)

For every deep config, at init and after the last step: the singular values of the Jacobian
of the hidden stack's output with respect to its input (one per example of a fixed batch of
{params.deep_train.jacobian_examples}, BatchNorm with that batch's statistics held fixed) and
of each weight matrix.

{answers.conditioning(plain_deep, tanh_gains)}

{table(conditioning_table(deep_rows))}

{figures_line(params.deep, "spectrum", f"{figures}/deep")}"""
    )
    sections.append(
        f"""## 6. The deep network as the notebook runs it

{params.deep_train.n_layers} hidden layers of {params.deep_train.n_hidden}, trained for
{params.deep_train.steps:,} steps (the notebook's 1,001: it breaks after the update of step
i = 1000), then evaluated with BatchNorm's running statistics (momentum
{params.deep_train.bn_momentum}, eps {params.deep_train.bn_eps:g}), as the notebook does.
Train and val loss of every config, and each weight's log10 update:data at the last step:

{table(optimizer_table(deep_rows))}

Against the numbers the notebook prints for its stored run (`expected.yaml`, checked by
`make check`):

{table(drift_table(notebook_checks))}"""
    )
    sections.append(
        f"""## Names sampled from each model (seed {seeds[0]})

{samples_section(params.variants, samples_dir)}"""
    )
    deep_figures = "\n\n".join(
        " ".join(f"![{n} {k}]({figures}/deep/{n}_{k}.png)" for k in records.DEEP_FIGURES[:-1])
        for n in params.deep
    )
    sections.append(
        f"""## The deep network's layers

Every cell reads "at init → after the last step" for the hidden layer's output (after its
activation): saturated means |t| > 0.97 (tanh only), grad is the gradient of the layer's
output, and weight grad:data is std(grad) / std(weight) of the Linear feeding the layer.

{table(deep_table(deep_rows))}

{deep_figures}"""
    )
    write_text(out, "\n\n".join(sections) + "\n")
    write_text(curves, long_curves(points))
    with records.open_runs(client, exp_id, record, params) as runs:
        records.log_outputs(client, runs, record, params)
    log(f"report: wrote {out}, {curves} and {figure}")


if __name__ == "__main__":
    run_stage(main)
