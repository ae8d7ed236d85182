"""Stage fold: BatchNorm folded into the Linear before it, the lecture's exercise E02.

For every seed of the calibrated BatchNorm model, gain · (x W1 - mean) / std + bias becomes
x W1' + b1' with W1' = W1 · gain / std and b1' = bias - mean · gain / std. The fold is checked
over the whole val split (the largest |Δ logit| within fold.tolerance, the same loss) and
timed against the BatchNorm model. Writes the folded model, a plain MLP with b1 and no norm,
and the metrics; a fold that does not match stops the stage naming the seed.
"""

from pathlib import Path

import click
import torch

from actgrad.calibration import fold
from actgrad.config import plain
from actgrad.model import Weights
from actgrad.params import read_params

from . import records
from .inputs import load_split
from .outputs import writing
from .stage import StageError, log, run_stage, stage_command
from .tracking import log_values, mlflow_client


def record(params, args):
    return records.Record(
        stage="fold",
        source="pipeline/fold.py",
        name="fold",
        outputs={role: Path(args[role]) for role in ("folded", "metrics")},
        fill=fill,
        tags={"variant": params.calibrate.variant},
        dataset=(Path(args["split"]), Path(args["summary"])),
    )


def fill(client, runs, record, params):
    metrics = records.read_json(record.outputs["metrics"])
    metrics.pop("seeds")
    run_params = {"variant": params.calibrate.variant} | records.flatten(
        {"fold": plain(params.fold)}
    )
    log_values(client, runs.top, records.numbers(metrics), run_params)
    records.log_files(client, runs.top, [record.outputs["metrics"]])


def check(metrics, seeds, tolerance):
    """StageError naming the first seed whose fold moves a logit or the loss beyond tolerance."""
    for seed in map(str, seeds):
        diff, loss_diff = (metrics["seeds"][seed][k] for k in ("max_abs_logit_diff", "loss_diff"))
        if not (diff <= tolerance and loss_diff <= tolerance):
            raise StageError(
                f"fold: seed {seed}: the folded model is off by {diff:.3g} in a logit and "
                f"{loss_diff:.3g} in the val loss, beyond fold.tolerance {tolerance:g}"
            )


@click.command()
@click.option("--split", required=True, help="the split stage's folder")
@click.option("--summary", required=True, help="the split stage's summary JSON")
@click.option("--model", required=True, help="the BatchNorm variant's trained model")
@click.option("--statistics", required=True, help="the calibrate stage's statistics")
@click.option("--folded", required=True)
@click.option("--metrics", required=True)
@stage_command
def main(**paths):
    params = read_params()
    name, cfg = params.calibrate.variant, params.fold
    this = record(params, paths)
    client, exp_id = mlflow_client()
    X, Y = load_split(paths["split"], "val")
    weights = Weights.from_state_dict(torch.load(paths["model"], weights_only=True))
    calibrated = torch.load(paths["statistics"], weights_only=True)
    log(f"fold: {name}, {len(weights.seeds)} seeds, the val split's {len(Y):,} examples")
    with records.open_runs(client, exp_id, this, params) as runs, writing() as out:
        metrics, folded, seconds = fold(
            weights, calibrated, params.variants[name], X, Y, cfg.repeats
        )
        check(metrics, weights.seeds, cfg.tolerance)
        torch.save(folded.state_dict(), out.path(paths["folded"]))
        out.json(paths["metrics"], metrics)
        out.commit()
        records.log_outputs(client, runs, this, params)
        # the timings vary from run to run: MLflow and the log hold them, not the outputs
        speedup = seconds["batchnorm"] / seconds["folded"]
        timing = {f"{k}_val_pass_ms": v * 1e3 for k, v in seconds.items()}
        log_values(client, runs.top, timing | {"inference_speedup": speedup})
    log(
        f"fold: every seed within {metrics['largest_abs_logit_diff']:.2g} of BatchNorm's logits; "
        f"a val pass takes {timing['folded_val_pass_ms']:.2f} ms folded, "
        f"{timing['batchnorm_val_pass_ms']:.2f} ms with BatchNorm ({speedup:.2f}x)"
    )


if __name__ == "__main__":
    run_stage(main)
