"""Stage train@<variant>: train every seed of one variant, evaluate it, sample names from the
lecture seed's model.

Writes the model (every seed's weights), the metrics JSON (losses, instruments and the
exercises' answers, per seed and for the lecture seed), the loss curve (the lecture seed's and
the mean over seeds), the series (every seed's curves), four figures and the sampled names;
logs the variant's run, one run per seed, and the lecture seed's MLflow model.
"""

import functools

from actgrad.errors import Diverged
from actgrad.mlp.engine import memory_needed
from actgrad.mlp.figures import train_figures
from actgrad.mlp.metrics import curve_rows, series_columns, series_rows, variant_metrics
from actgrad.mlp.network import logits
from actgrad.mlp.training import train_seeds
from actgrad.recipes import read_params
from actgrad.sampling import sample_names

from ..files import Csv, Json, Png, Split, Table, Tensors, Text
from ..machines import machine_id
from ..runner import Stage, StageError, check_interrupted, check_memory, log, progress_bar
from ..tracking.models import log_mlp_model
from ..tracking.records import Plan, flatten, log_files, numbers
from ..tracking.store import log_values, set_tags

CURVE_COLUMNS = ["step", "loss", "log10_loss", "loss_mean"]  # the lecture seed's, and the mean
FIGURES = ("init", "update_ratio", "units", "seeds")


def compute(params, variant, split, tasks):
    recipe, cfg, vocab = params.variant(variant), params.train_of(variant), split["vocab"]
    X, Y = split["train"]
    check_memory("train", cfg, memory_needed(cfg, cfg.seeds, len(vocab), X.shape[1], len(X)))
    log(f"train@{variant}: {len(cfg.seeds)} seeds x {cfg.steps:,} steps on {tasks}")
    placement = {}

    def done(seeds, where):
        placement.update(dict.fromkeys(seeds, where))
        on = "this process" if where.fingerprint is None else f"{where.worker} ({where.host})"
        trained = ", ".join(map(str, seeds))
        log(f"train@{variant}: seeds {trained} trained on {on} in {where.seconds:.0f}s")

    with progress_bar(cfg.steps * len(cfg.seeds), f"train@{variant}") as bar:
        tasks.on_progress = progress(bar, len(cfg.seeds))
        try:
            weights, result = train_seeds(cfg.seeds, recipe, cfg, X, Y, len(vocab), tasks, done)
        except Diverged as e:
            lr = f"variants.{variant}" if params.variants[variant].optimizer else "train"
            raise StageError(
                f"train@{variant}: {e}; lower {lr}.optimizer.lr or raise train.max_loss"
            ) from None
    splits = {name: split[name] for name in ("train", "val")}
    lecture = functools.partial(logits, weights.seed_slice(0), variant=recipe)
    samples = sample_names(lecture, vocab, X.shape[1], cfg.samples, cfg.sample_seed)
    metrics = variant_metrics(weights, result, recipe, cfg, splits, len(vocab))
    figures = train_figures(variant, recipe, cfg, weights, result)
    return {
        "model": weights.state_dict(),
        "metrics": metrics,
        "curve": Table(CURVE_COLUMNS, curve_rows(result, cfg)),
        "series": Table(series_columns(weights.params), series_rows(weights, result, cfg)),
        "samples": "\n".join(samples) + "\n",
        **{f"{kind}_figure": png for kind, png in figures.items()},
        "placement": placement,
    }


def progress(bar, seeds):
    """The bar moved by the steps each group reports, its postfix the latest loss; Ctrl-C
    honoured between chunks."""
    done = {}

    def on_progress(group, step, losses):
        check_interrupted()
        done[group] = step * len(losses)
        bar.update(sum(done.values()) - bar.n)
        bar.set_postfix(loss=f"{losses[0]:.4f}")

    return on_progress


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
    train = params.train_of(made.key).model_dump(exclude={"seeds"})
    run_params = flatten({"variant": params.variant(made.key).model_dump(), "train": train})
    metrics = dict(values["metrics"])
    per_seed = metrics.pop("seeds")
    log_values(client, runs.top, numbers(metrics), run_params, values["curve"].series())
    series = values["series"].series(by="seed")
    for seed, run_id in runs.children.items():
        curves = {k: v for k, v in series[seed].items() if not k.startswith("grad_norm_")}
        log_values(client, run_id, numbers(per_seed[str(seed)]), run_params, curves)
        if seed in values.get("placement", {}):  # where it trained: not in the outputs
            set_tags(client, run_id, placement_tags(values["placement"][seed]))
    log_files(client, runs.top, [made.paths[role] for role in OUTPUTS if role != "model"])
    log_mlp_model(client, runs, made)


def placement_tags(where):
    """A seed's run: the worker and host it trained on, their kernels, the training time."""
    tags = {"trained_on": where.worker, "trained_host": where.host}
    tags["trained_seconds"] = f"{where.seconds:.1f}"
    if where.fingerprint:
        tags["trained_machine"] = machine_id(where.fingerprint)
    return tags


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
