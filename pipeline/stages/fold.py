"""Stage fold: BatchNorm folded into the Linear before it, the lecture's exercise E02.

For every seed of the calibrated BatchNorm model, gain · (x W1 - mean) / std + bias becomes
x W1' + b1' with W1' = W1 · gain / std and b1' = bias - mean · gain / std. The fold is checked
over the whole val split (the largest |Δ logit| within fold.tolerance, the same loss) and
timed against the BatchNorm model. Writes the folded model, a plain MLP with b1 and no norm,
and the metrics; a fold that does not match stops the stage naming the seed. The timings vary
from run to run: MLflow and the log hold them, not the outputs.
"""

from actgrad.mlp.calibration import fold
from actgrad.mlp.network import Weights
from actgrad.recipes import read_params

from ..files import Json, Split, Tensors
from ..runner import Stage, StageError
from ..tracking.records import Plan, flatten, log_files, numbers
from ..tracking.store import log_values


def check(metrics, seeds, tolerance):
    """StageError naming the first seed whose fold moves a logit or the loss beyond tolerance."""
    for seed in map(str, seeds):
        diff, loss_diff = (metrics["seeds"][seed][k] for k in ("max_abs_logit_diff", "loss_diff"))
        if not (diff <= tolerance and loss_diff <= tolerance):
            raise StageError(
                f"fold: seed {seed}: the folded model is off by {diff:.3g} in a logit and "
                f"{loss_diff:.3g} in the val loss, beyond fold.tolerance {tolerance:g}"
            )


def compute(params, split, model, statistics):
    cfg, weights = params.fold, Weights.from_state_dict(model)
    X, Y = split["val"]
    variant = params.variant(params.calibrate.variant)
    metrics, folded, seconds = fold(weights, statistics, variant, X, Y, cfg.repeats)
    check(metrics, weights.seeds, cfg.tolerance)
    timing = {f"{k}_val_pass_ms": v * 1e3 for k, v in seconds.items()}
    timing["inference_speedup"] = seconds["batchnorm"] / seconds["folded"]
    return {"folded": folded.state_dict(), "metrics": metrics, "timing": timing}


def runs(params, key):
    return Plan(name="fold", tags={"variant": params.calibrate.variant}, dataset=True)


def log_runs(client, runs, made):
    metrics = dict(made.values["metrics"])
    metrics.pop("seeds")
    fold_params = flatten({"fold": made.params.fold.model_dump()})
    run_params = {"variant": made.params.calibrate.variant} | fold_params
    log_values(client, runs.top, numbers(metrics) | made.values.get("timing", {}), run_params)
    log_files(client, runs.top, [made.paths["metrics"]])


def summary(made):
    m, t = made.values["metrics"], made.values["timing"]
    return (
        f"every seed within {m['largest_abs_logit_diff']:.2g} of BatchNorm's logits; a val pass "
        f"takes {t['folded_val_pass_ms']:.2f} ms folded, {t['batchnorm_val_pass_ms']:.2f} ms "
        f"with BatchNorm ({t['inference_speedup']:.2f}x)"
    )


STAGE = Stage(
    name="fold",
    params=read_params,
    compute=compute,
    inputs={"split": Split, "summary": Json, "model": Tensors, "statistics": Tensors},
    outputs={"folded": Tensors, "metrics": Json},
    runs=runs,
    log_runs=log_runs,
    describe=lambda made: (
        f"{made.params.calibrate.variant}, "
        f"{len(made.values['model']['seeds'])} seeds, the val split's "
        f"{len(made.values['split']['val'][1]):,} examples"
    ),
    summary=summary,
)

if __name__ == "__main__":
    STAGE.main()
