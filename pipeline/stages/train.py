"""Stage train@<variant>: train every seed of one variant, evaluate it, sample names from the
lecture seed's model.

Writes the model (every seed's weights), the metrics JSON (losses, instruments and the
exercises' answers, per seed and for the lecture seed), the loss curve (the lecture seed's and
the mean over seeds), the series (every seed's curves), four figures and the sampled names;
logs the variant's run, one run per seed, and the lecture seed's MLflow model.
"""

import functools

from actgrad.errors import Diverged
from actgrad.mlp.figures import train_figures
from actgrad.mlp.metrics import curve_rows, series_columns, series_rows, variant_metrics
from actgrad.mlp.network import logits
from actgrad.mlp.training import train_seeds
from actgrad.recipes import read_params
from actgrad.sampling import sample_names

from ..files import Csv, Json, Png, Split, Table, Tensors, Text
from ..runner import Stage, StageError, check_interrupted, log, progress_bar
from ..tracking.models import log_model
from ..tracking.records import Plan, flatten, log_files, numbers
from ..tracking.store import log_values

CURVE_COLUMNS = ["step", "loss", "log10_loss", "loss_mean"]  # the lecture seed's, and the mean
FIGURES = ("init", "update_ratio", "units", "seeds")


def compute(params, variant, split, workers):
    recipe, cfg, vocab = params.variant(variant), params.train, split["vocab"]
    X, Y = split["train"]
    processes = f"{workers} process" + "es" * (workers > 1)
    log(f"train@{variant}: {len(cfg.seeds)} seeds x {cfg.steps:,} steps, {processes}")
    with progress_bar(cfg.steps, f"train@{variant}") as bar:

        def on_chunk(step, losses):
            check_interrupted()
            bar.update(step - bar.n)
            bar.set_postfix(loss=f"{losses[0, -1].item():.4f}")

        try:
            weights, result = train_seeds(
                cfg.seeds, recipe, cfg, X, Y, len(vocab), workers, on_chunk
            )
        except Diverged as e:
            lr = f"variants.{variant}" if params.variants[variant].optimizer else "train"
            raise StageError(
                f"train@{variant}: {e}; lower {lr}.optimizer.lr or raise train.max_loss"
            ) from None
    splits = {name: split[name] for name in ("train", "val")}
    lecture = functools.partial(logits, weights.seed_slice(0), variant=recipe)
    samples = sample_names(lecture, vocab, X.shape[1], cfg.samples, cfg.sample_seed)
    figures = train_figures(variant, recipe, cfg, weights, result)
    return {
        "model": weights.state_dict(),
        "metrics": variant_metrics(weights, result, recipe, cfg, splits, len(vocab)),
        "curve": Table(CURVE_COLUMNS, curve_rows(result, cfg)),
        "series": Table(series_columns(weights.params), series_rows(weights, result, cfg)),
        "samples": "\n".join(samples) + "\n",
        **{f"{kind}_figure": png for kind, png in figures.items()},
    }


def runs(params, variant):
    """The variant's run, and one run per seed."""
    seeds = params.train.seeds
    return Plan(
        name=variant,
        tags={"variant": variant, "seeds": list(seeds)},
        children={s: (f"{variant} seed {s}", {"variant": variant, "seed": s}) for s in seeds},
        dataset=True,
    )


def log_runs(client, runs, made):
    """The variant's run: its metrics, the lecture seed's curve and the mean over seeds, the
    figures and files, its MLflow model; each seed's run: its losses and its curves (the
    gradient norms stay in the CSV and the figure: thousands of points per seed, seconds of
    logging)."""
    params, values = made.params, made.values
    train = params.train.model_dump(exclude={"seeds"})
    run_params = flatten({"variant": params.variant(made.key).model_dump(), "train": train})
    metrics = dict(values["metrics"])
    per_seed = metrics.pop("seeds")
    log_values(client, runs.top, numbers(metrics), run_params, values["curve"].series())
    series = values["series"].series(by="seed")
    for seed, run_id in runs.children.items():
        curves = {k: v for k, v in series[seed].items() if not k.startswith("grad_norm_")}
        log_values(client, run_id, numbers(per_seed[str(seed)]), run_params, curves)
    log_files(client, runs.top, [made.paths[role] for role in OUTPUTS if role != "model"])
    log_model(client, runs, made)


def summary(made):
    metrics, seed = made.values["metrics"], made.params.train.seeds[0]
    return f"train {metrics['train_loss']:.4f} val {metrics['val_loss']:.4f} (seed {seed})"


OUTPUTS = {
    "model": Tensors,
    "metrics": Json,
    "curve": Csv,
    "series": Csv,
    "samples": Text,
    **{f"{kind}_figure": Png for kind in FIGURES},
}
STAGE = Stage(
    name="train",
    key="variant",
    params=read_params,
    compute=compute,
    inputs={"split": Split, "summary": Json},
    outputs=OUTPUTS,
    runs=runs,
    log_runs=log_runs,
    summary=summary,
)

if __name__ == "__main__":
    STAGE.main()
