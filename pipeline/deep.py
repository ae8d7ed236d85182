"""Stage deep@<config>: a short run of the lecture's deep network, and its instruments.

Writes, to the paths its command names, the trained network, the metrics JSON, the series CSV
of its curves and five figures, and logs an MLflow run named "deep <config>".
"""

import time
from pathlib import Path

import click
import torch

from actgrad import deep, figures
from actgrad.config import plain
from actgrad.errors import Diverged
from actgrad.params import read_params

from . import records
from .inputs import load_split, load_vocab
from .outputs import writing
from .stage import log, run_stage, stage_command
from .tracking import log_values, mlflow_client

OUTPUTS = ("model", "metrics", "series") + tuple(f"{kind}_figure" for kind in figures.DEEP_FIGURES)


def record(params, args):
    config = args["config"]
    return records.Record(
        stage=f"deep@{config}",
        source="pipeline/deep.py",
        name=f"deep {config}",
        outputs={role: Path(args[role]) for role in OUTPUTS},
        fill=fill,
        tags={"deep_config": config},
        dataset=(Path(args["split"]), Path(args["summary"])),
    )


def fill(client, runs, record, params):
    """Every number of the JSON as a metric, except those the curves end on."""
    config = record.tags["deep_config"]
    run_params = records.flatten(
        {"deep": plain(params.deep[config]), "deep_train": plain(params.deep_train)}
    )
    series = records.read_series(record.outputs["series"])
    metrics = records.numbers(records.read_json(record.outputs["metrics"]))
    metrics = {k: v for k, v in metrics.items() if k not in series}
    log_values(client, runs.top, metrics, run_params, series)
    records.log_files(
        client, runs.top, [p for role, p in record.outputs.items() if role != "model"]
    )


def figure_option(kind):
    return click.option(f"--{kind.replace('_', '-')}-figure", required=True)


@click.command()
@click.argument("config")
@click.option("--split", required=True, help="the split stage's folder")
@click.option("--summary", required=True, help="the split stage's summary JSON")
@click.option("--model", required=True, help="the trained network (DVC's cache)")
@click.option("--metrics", required=True)
@click.option("--series", required=True)
@figure_option("activations")
@figure_option("gradients")
@figure_option("weight_grads")
@figure_option("update_ratio")
@figure_option("spectrum")
@stage_command
def main(config, **paths):
    params = read_params()
    cfg, train = params.deep_config(config), params.deep_train
    this = record(params, {"config": config, **paths})
    client, exp_id = mlflow_client()
    splits = {name: load_split(paths["split"], name) for name in ("train", "val")}
    vocab_size = len(load_vocab(paths["split"]))
    log(f"deep@{config}: {figures.describe(cfg, train)}, {train.steps:,} steps")
    started = time.time()
    with records.open_runs(client, exp_id, this, params) as runs, writing() as out:
        try:
            result = deep.run_deep(cfg, train, splits, vocab_size)
        except Diverged as e:
            raise click.ClickException(
                f"deep@{config}: {e}; lower deep.{config}.gain or its optimizer's lr"
            ) from None
        kinds = {kind: out.path(paths[f"{kind}_figure"]) for kind in figures.DEEP_FIGURES}
        figures.deep_figures(config, cfg, train, result, kinds)
        torch.save(result.net.state_dict(), out.path(paths["model"]))
        out.json(paths["metrics"], deep.metrics(result, cfg))
        out.csv(paths["series"], *deep.series(result))
        out.commit()
        records.log_outputs(client, runs, this, params)
    losses = result.split_losses
    outcome = losses and f"train {losses['train']:.4f} val {losses['val']:.4f}"
    outcome = outcome or f"diverged at step {result.diverged_at}"
    log(f"deep@{config}: done in {time.time() - started:.0f}s, {outcome}")


if __name__ == "__main__":
    run_stage(main)
