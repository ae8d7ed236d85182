"""Stage calibrate: BatchNorm statistics measured once over the whole training set.

Evaluates every seed of the BatchNorm model with those statistics and with the running ones
kept during training, measures how far the two sets of statistics are apart, and keeps the
calibrated ones for the fold stage.
"""

from pathlib import Path

import click
import torch

from actgrad.calibration import calibrate
from actgrad.model import Weights
from actgrad.params import read_params
from actgrad.plots import bn_calibration_figure

from . import records
from .inputs import load_split
from .outputs import writing
from .stage import log, run_stage, stage_command
from .tracking import log_values, mlflow_client


def record(params, args):
    return records.Record(
        stage="calibrate",
        source="pipeline/calibrate.py",
        name="calibrate",
        outputs={role: Path(args[role]) for role in ("statistics", "figure", "metrics")},
        fill=fill,
        tags={"variant": params.calibrate.variant},
        dataset=(Path(args["split"]), Path(args["summary"])),
    )


def fill(client, runs, record, params):
    metrics = records.read_json(record.outputs["metrics"])
    metrics.pop("seeds")  # the mean and sd over them stay
    log_values(client, runs.top, records.numbers(metrics), {"variant": params.calibrate.variant})
    records.log_files(client, runs.top, [record.outputs["figure"], record.outputs["metrics"]])


@click.command()
@click.option("--split", required=True, help="the split stage's folder")
@click.option("--summary", required=True, help="the split stage's summary JSON")
@click.option("--model", required=True, help="the BatchNorm variant's trained model")
@click.option("--statistics", required=True)
@click.option("--figure", required=True)
@click.option("--metrics", required=True)
@stage_command
def main(**paths):
    params = read_params()
    name = params.calibrate.variant
    this = record(params, paths)
    client, exp_id = mlflow_client()
    splits = {split: load_split(paths["split"], split) for split in ("train", "val")}
    weights = Weights.from_state_dict(torch.load(paths["model"], weights_only=True))
    log(f"calibrate: {name}, {len(weights.seeds)} seeds")
    with records.open_runs(client, exp_id, this, params) as runs, writing() as out:
        metrics, stats = calibrate(weights, params.variants[name], splits)
        running = weights.seed_slice(0)
        bn_calibration_figure(
            {"mean": running["mean"], "std": running["std"]},
            {k: v[0] for k, v in stats.items()},
            f"{name}: running vs calibrated statistics (seed {weights.seeds[0]})",
            out.path(paths["figure"]),
        )
        torch.save({"seeds": torch.tensor(weights.seeds), **stats}, out.path(paths["statistics"]))
        out.json(paths["metrics"], metrics)
        out.commit()
        records.log_outputs(client, runs, this, params)
    log(
        f"calibrate: calibrated train {metrics['train_loss']:.4f} val {metrics['val_loss']:.4f}; "
        f"running train {metrics['running_train_loss']:.4f} val {metrics['running_val_loss']:.4f}"
    )


if __name__ == "__main__":
    run_stage(main)
