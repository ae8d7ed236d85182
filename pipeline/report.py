"""Stage report: reports/comparison.md, one row per variant plus calibrate."""

import json
from pathlib import Path

import click
import yaml

from actgrad.report import SIGNIFICANCE, comparison_table

from .common import log, read_params, stage_command, write_text


def read_rows(params, metrics_dir):
    """(name, metrics) for every variant in params order, then calibrate."""
    names = [*params.variants, "calibrate"]
    return [(n, json.loads((Path(metrics_dir) / f"{n}.json").read_text())) for n in names]


@click.command()
@click.option("--metrics", "metrics_dir", default="metrics", show_default=True)
@click.option("--expected", default="expected.yaml", show_default=True)
@click.option("--out", default="reports/comparison.md", show_default=True)
@stage_command
def main(metrics_dir, expected, out):
    params = read_params()
    table = comparison_table(read_rows(params, metrics_dir), yaml.safe_load(open(expected)))
    seeds = params.train.seeds
    text = f"""# Activations, gradients and BatchNorm: train/val loss per init recipe

Seed {seeds[0]} (the lecture's) for the single-seed columns; mean ± sd over seeds {list(seeds)}.
`calibrate` evaluates the `{params.calibrate.variant}` model with BatchNorm statistics measured
once over the whole training set instead of the running ones.
`Δ val` is the change from the row above; `lecture val` is the lecture's published number and
`within tol` says whether ours matches it within the tolerance in `expected.yaml`.
`beats noise`: one-sided Welch's t-test that the row's per-seed val losses have a lower mean
than the row above's, at p < {SIGNIFICANCE}.

{table.to_markdown(index=False)}
"""
    write_text(out, text)
    log(f"report: wrote {out}")


if __name__ == "__main__":
    main()
