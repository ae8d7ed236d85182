"""Stage fold: BatchNorm folded into the Linear before it, the lecture's exercise E02.

For every seed of the calibrated BatchNorm model, gain · (x W1 - mean) / std + bias becomes
x W1' + b1' with W1' = W1 · gain / std and b1' = bias - mean · gain / std. The fold is checked
over the whole val split (the largest |Δ logit| within fold.tolerance, the same loss) and
timed against the BatchNorm model. Writes models/<variant>_folded.pt, a plain MLP with b1 and no
norm, and metrics/fold.json; a fold that does not match stops the stage naming the seed.
"""

import dataclasses
import statistics
import time

import click
import torch

from actgrad.model import Weights, fold_batchnorm, logits, split_loss
from actgrad.pieces import NoNorm

from . import records
from .inputs import load_split
from .outputs import atomic_path, write_json
from .params import read_params
from .stage import StageError, log, run_stage, stage_command
from .tracking import log_values, mlflow_client


@torch.no_grad()
def inference_seconds(w, variant, X, stats, repeats):
    """The median time of one pass of the model over X (the logits), over `repeats` passes."""
    times = []
    for _ in range(repeats):
        start = time.perf_counter()
        logits(w, X, variant, stats)
        times.append(time.perf_counter() - start)
    return statistics.median(times)


@click.command()
@click.option("--data", default="data/split", show_default=True)
@stage_command
def main(data):
    params = read_params()
    name, cfg = params.calibrate.variant, params.fold
    variant = params.variants[name]
    plain = dataclasses.replace(variant, norm=NoNorm())  # the folded model: b1, no norm
    record = records.fold(params)
    client, exp_id = mlflow_client()
    X, Y = load_split(data, "val")
    weights = Weights.from_state_dict(torch.load(f"models/{name}.pt", weights_only=True))
    calibrated = torch.load(f"models/{name}_calibrated.pt", weights_only=True)
    torch.set_num_threads(1)
    log(f"fold: {name}, {len(weights.seeds)} seeds, the val split's {len(Y):,} examples")
    per_seed = {k: [] for k in ("max_abs_logit_diff", "loss_diff", "folded_val_loss")}
    folded, timings = [], {"batchnorm": [], "folded": []}
    with records.open_runs(client, exp_id, record, params) as runs:
        for s, seed in enumerate(weights.seeds):
            w = weights.seed_slice(s)
            stats = {k: calibrated[k][s] for k in ("mean", "std")}
            one = fold_batchnorm(w, stats)
            with torch.no_grad():
                diff = (logits(one, X, plain) - logits(w, X, variant, stats)).abs().max().item()
            loss = split_loss(one, plain, X, Y)
            loss_diff = abs(loss - split_loss(w, variant, X, Y, stats))
            if not (diff <= cfg.tolerance and loss_diff <= cfg.tolerance):
                raise StageError(
                    f"fold: seed {seed}: the folded model is off by {diff:.3g} in a logit and "
                    f"{loss_diff:.3g} in the val loss, beyond fold.tolerance {cfg.tolerance:g}"
                )
            per_seed["max_abs_logit_diff"].append(diff)
            per_seed["loss_diff"].append(loss_diff)
            per_seed["folded_val_loss"].append(loss)
            folded.append(one)
            timings["batchnorm"].append(inference_seconds(w, variant, X, stats, cfg.repeats))
            timings["folded"].append(inference_seconds(one, plain, X, None, cfg.repeats))
        metrics = {k: v[0] for k, v in per_seed.items()}
        metrics["largest_abs_logit_diff"] = max(per_seed["max_abs_logit_diff"])
        metrics["seeds"] = {
            str(seed): {k: v[i] for k, v in per_seed.items()}
            for i, seed in enumerate(weights.seeds)
        }
        stacked = {
            n: torch.stack([f[n].view(-1, f[n].shape[-1]) for f in folded]) for n in folded[0]
        }
        with atomic_path(record.outputs["model"]) as tmp:
            torch.save(Weights(weights.seeds, stacked).state_dict(), tmp)
        write_json(record.outputs["metrics"], metrics)
        records.log_outputs(client, runs, record, params)
        # the timings vary from run to run: MLflow and the log hold them, not the outputs
        seconds = {k: statistics.median(v) for k, v in timings.items()}
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
