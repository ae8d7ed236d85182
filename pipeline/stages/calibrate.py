"""Stage calibrate: BatchNorm statistics measured once over the whole training set.

Evaluates every seed of the BatchNorm model with those statistics and with the running ones
kept during training, measures how far the two sets of statistics are apart, and keeps the
calibrated ones for the fold stage.
"""

import torch

from actgrad.mlp.calibration import calibrate
from actgrad.mlp.network import Weights
from actgrad.plots import bn_calibration_figure
from actgrad.recipes import read_params

from ..files import Json, Png, Split, Tensors
from ..runner import Stage
from ..tracking.records import Plan, log_files, numbers
from ..tracking.store import log_values


def compute(params, split, model):
    name = params.calibrate.variant
    weights = Weights.from_state_dict(model)
    splits = {s: split[s] for s in ("train", "val")}
    metrics, stats = calibrate(weights, params.variant(name), splits)
    running = weights.seed_slice(0)
    figure = bn_calibration_figure(
        {"mean": running["mean"], "std": running["std"]},
        {k: v[0] for k, v in stats.items()},
        f"{name}: running vs calibrated statistics (seed {weights.seeds[0]})",
    )
    statistics = {"seeds": torch.tensor(weights.seeds), **stats}
    return {"statistics": statistics, "figure": figure, "metrics": metrics}


def runs(params, key):
    return Plan(name="calibrate", tags={"variant": params.calibrate.variant}, dataset=True)


def log_runs(client, runs, made):
    metrics = dict(made.values["metrics"])
    metrics.pop("seeds")  # the mean and sd over them stay
    log_values(client, runs.top, numbers(metrics), {"variant": made.params.calibrate.variant})
    log_files(client, runs.top, [made.paths["figure"], made.paths["metrics"]])


def summary(made):
    m = made.values["metrics"]
    return (
        f"calibrated train {m['train_loss']:.4f} val {m['val_loss']:.4f}; "
        f"running train {m['running_train_loss']:.4f} val {m['running_val_loss']:.4f}"
    )


STAGE = Stage(
    name="calibrate",
    params=read_params,
    compute=compute,
    inputs={"split": Split, "summary": Json, "model": Tensors},
    outputs={"statistics": Tensors, "figure": Png, "metrics": Json},
    runs=runs,
    log_runs=log_runs,
    describe=lambda made: (
        f"{made.params.calibrate.variant}, {len(made.values['model']['seeds'])} seeds"
    ),
    summary=summary,
)

if __name__ == "__main__":
    STAGE.main()
