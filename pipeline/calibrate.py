"""Stage calibrate: BatchNorm statistics measured once over the whole training set.

Evaluates every seed of the BatchNorm model with those statistics and with the running ones
kept during training, measures how far the two sets of statistics are apart, and keeps the
calibrated ones in models/<variant>_calibrated.pt for the fold stage.
"""

import click
import torch

from actgrad.model import Weights, batch_stats, split_loss
from actgrad.plots import bn_calibration_figure
from actgrad.summary import seed_summary

from . import records
from .inputs import load_split
from .outputs import atomic_path, write_json
from .params import read_params
from .stage import log, run_stage, stage_command
from .tracking import mlflow_client


@click.command()
@click.option("--data", default="data/split", show_default=True)
@stage_command
def main(data):
    params = read_params()
    name = params.calibrate.variant
    variant = params.variants[name]
    record = records.calibrate(params)
    client, exp_id = mlflow_client()
    splits = {name: load_split(data, name) for name in ("train", "val")}
    weights = Weights.from_state_dict(torch.load(f"models/{name}.pt", weights_only=True))
    log(f"calibrate: {name}, {len(weights.seeds)} seeds")
    keys = (
        "train_loss",
        "val_loss",
        "running_train_loss",
        "running_val_loss",
        "mean_max_abs_diff",
        "std_max_rel_diff",
    )
    per_seed = {k: [] for k in keys}
    calibrated = []
    with records.open_runs(client, exp_id, record, params) as runs:
        for s in range(len(weights.seeds)):
            w = weights.seed_slice(s)
            stats = batch_stats(w, splits["train"][0], variant)
            calibrated.append(stats)
            for split, (X, Y) in splits.items():
                per_seed[f"{split}_loss"].append(split_loss(w, variant, X, Y, stats))
                per_seed[f"running_{split}_loss"].append(split_loss(w, variant, X, Y))
            mean, std = stats["mean"], stats["std"]
            per_seed["mean_max_abs_diff"].append((w["mean"] - mean).abs().max().item())
            per_seed["std_max_rel_diff"].append(((w["std"] - std) / std).abs().max().item())
            if s == 0:
                with atomic_path(record.outputs["figure"]) as tmp:
                    bn_calibration_figure(
                        {"mean": w["mean"], "std": w["std"]},
                        stats,
                        f"{name}: running vs calibrated statistics (seed {weights.seeds[0]})",
                        tmp,
                    )
        metrics = {k: v[0] for k, v in per_seed.items()}
        metrics["seeds"] = {
            str(seed): {k: v[i] for k, v in per_seed.items()}
            for i, seed in enumerate(weights.seeds)
        }
        metrics.update(seed_summary(per_seed))
        with atomic_path(record.outputs["statistics"]) as tmp:
            stacked = {k: torch.stack([c[k] for c in calibrated]) for k in ("mean", "std")}
            torch.save({"seeds": torch.tensor(weights.seeds), **stacked}, tmp)
        write_json(record.outputs["metrics"], metrics)
        records.log_outputs(client, runs, record, params)
    log(
        f"calibrate: calibrated train {metrics['train_loss']:.4f} val {metrics['val_loss']:.4f}; "
        f"running train {metrics['running_train_loss']:.4f} val {metrics['running_val_loss']:.4f}"
    )


if __name__ == "__main__":
    run_stage(main)
