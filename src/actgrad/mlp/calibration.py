"""BatchNorm at inference, the lecture's last steps: its statistics measured once over the whole
training set (calibrate), then folded into the Linear before it (fold, the exercise E02)."""

import functools
import statistics
import time

import torch

from ..pieces.norms import NoNorm
from ..stats import seed_table
from .network import Weights, batch_stats, fold_batchnorm, logits, loss


def calibrate(weights, variant, splits):
    """(metrics, statistics): each seed's losses with the calibrated and the running statistics,
    how far the two are apart, and the calibrated {mean, std} stacked over the seeds."""
    keys = ("train_loss", "val_loss", "running_train_loss", "running_val_loss")
    per_seed = {k: [] for k in (*keys, "mean_max_abs_diff", "std_max_rel_diff")}
    calibrated = []
    for s in range(len(weights.seeds)):
        w = weights.seed_slice(s)
        stats = batch_stats(w, splits["train"][0], variant)
        calibrated.append(stats)
        for split, (X, Y) in splits.items():
            per_seed[f"{split}_loss"].append(loss(w, variant, X, Y, stats))
            per_seed[f"running_{split}_loss"].append(loss(w, variant, X, Y))
        per_seed["mean_max_abs_diff"].append((w["mean"] - stats["mean"]).abs().max().item())
        per_seed["std_max_rel_diff"].append(
            ((w["std"] - stats["std"]) / stats["std"]).abs().max().item()
        )
    metrics = seed_table(per_seed, weights.seeds)
    stacked = {k: torch.stack([c[k] for c in calibrated]) for k in ("mean", "std")}
    return metrics, stacked


@torch.no_grad()
def inference_seconds(logits_of, X, repeats):
    """The median time of one pass of a model over X (its logits), over `repeats` passes."""
    times = []
    for _ in range(repeats):
        start = time.perf_counter()
        logits_of(X)
        times.append(time.perf_counter() - start)
    return statistics.median(times)


def fold(weights, calibrated, variant, X, Y, repeats):
    """(metrics, folded Weights, seconds): every seed's BatchNorm (with its calibrated
    statistics) folded into W1 and b1, how far its logits and val loss move, and the median
    seconds of a pass over X with BatchNorm and folded."""
    folded_variant = variant.model_copy(update={"norm": NoNorm()})
    per_seed = {k: [] for k in ("max_abs_logit_diff", "loss_diff", "folded_val_loss")}
    folded, seconds = [], {"batchnorm": [], "folded": []}
    for s in range(len(weights.seeds)):
        w = weights.seed_slice(s)
        stats = {k: calibrated[k][s] for k in ("mean", "std")}
        one = fold_batchnorm(w, stats)
        bn = functools.partial(logits, w, variant=variant, stats=stats)
        plain = functools.partial(logits, one, variant=folded_variant)
        with torch.no_grad():
            per_seed["max_abs_logit_diff"].append((plain(X) - bn(X)).abs().max().item())
        folded_loss = loss(one, folded_variant, X, Y)
        per_seed["loss_diff"].append(abs(folded_loss - loss(w, variant, X, Y, stats)))
        per_seed["folded_val_loss"].append(folded_loss)
        folded.append(one)
        seconds["batchnorm"].append(inference_seconds(bn, X, repeats))
        seconds["folded"].append(inference_seconds(plain, X, repeats))
    metrics = {k: v[0] for k, v in per_seed.items()}
    metrics["largest_abs_logit_diff"] = max(per_seed["max_abs_logit_diff"])
    metrics["seeds"] = seed_table(per_seed, weights.seeds)["seeds"]
    stacked = {n: torch.stack([f[n].view(-1, f[n].shape[-1]) for f in folded]) for n in folded[0]}
    medians = {k: statistics.median(v) for k, v in seconds.items()}
    return metrics, Weights(weights.seeds, stacked), medians
