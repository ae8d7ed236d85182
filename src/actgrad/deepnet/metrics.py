"""What the deep stage writes of a run: its metrics JSON and its series of curves."""

import math

import torch

from ..stats import block_means, seed_summary

SERIES_EVERY = 10  # each per-step curve is kept as the mean of every 10 steps


def _finite(value):
    return value if value is not None and math.isfinite(value) else None


def _spread_only(spectra):
    """The spectra without the singular values themselves (they go to the figure)."""
    return spectra and {k: v for k, v in spectra.items() if k != "values"}


def metrics(results, seeds, cfg):
    """The JSON: the first seed's (the notebook's) run in full, every seed's losses, last
    update:data ratios and saturation under "seeds", and the mean and sd of the losses over
    the seeds when none diverged."""
    top = run_metrics(results[0], cfg)
    top["seeds"] = {str(seed): seed_metrics(r) for seed, r in zip(seeds, results)}
    losses = {k: [m[k] for m in top["seeds"].values()] for k in ("train_loss", "val_loss")}
    if all(v is not None for values in losses.values() for v in values):
        top |= seed_summary(losses)
    return top


def seed_metrics(result):
    """One seed's run in a few numbers: its losses, where it diverged, each weight's last
    log10 update:data and each tanh layer's saturation after the last step."""
    losses = result.split_losses or {}
    layers = result.final.layers if result.final else {}
    return {
        "train_loss": losses.get("train"),
        "val_loss": losses.get("val"),
        "diverged_at_step": result.diverged_at,
        "update_ratio_log10": {k: _finite(v[-1]) for k, v in result.update_ratios.items()},
        "saturated_pct": {k: v["saturated_pct"] for k, v in layers.items()},
    }


def run_metrics(result, cfg):
    """One run: losses, each read-out's numbers (init, and final unless training diverged) and
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
        "update_ratio_log10": {k: _finite(v[-1]) for k, v in result.update_ratios.items()},
        "init": {"layers": result.init.layers, "weights": result.init.weights},
        "final": result.final and {"layers": result.final.layers, "weights": result.final.weights},
        "spectra": {moment: _spread_only(s) for moment, s in result.spectra.items()},
    }


def series(result):
    """(columns, rows) of the series CSV: the batch loss and each weight's log10 update:data,
    as means of SERIES_EVERY steps, each row at the first step of its block (from step 1)."""
    curves = {"batch_loss": result.losses}
    curves |= {f"update_ratio_log10.{k}": r for k, r in result.update_ratios.items()}
    values = torch.tensor(list(curves.values()), dtype=torch.float64).T
    means = block_means(values, range(len(values)), SERIES_EVERY).tolist()
    return ["step", *curves], [(k * SERIES_EVERY + 1, *row) for k, row in enumerate(means)]
