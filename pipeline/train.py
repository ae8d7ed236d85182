"""Stage train@<variant>: train every seed of one variant, evaluate, save, log to MLflow.

Writes, to the paths its command names: the model (every seed's weights), the metrics JSON
(losses, instruments and the exercises' answers, per seed and for the lecture seed), the loss
curve (the lecture seed's and the mean over seeds), the series (every seed's curves), three
figures of the lecture seed and its sampled names.
"""

import functools
import os
import tempfile
import time
from pathlib import Path

import click
import torch

from actgrad import figures, instruments
from actgrad.config import plain
from actgrad.errors import Diverged
from actgrad.model import logits
from actgrad.parallel import train_seeds
from actgrad.params import read_params
from actgrad.plots import loss_curve_figure
from actgrad.sample import sample_names

from . import models, records
from .inputs import load_split, load_vocab
from .outputs import writing
from .stage import check_interrupted, log, progress_bar, run_stage, stage_command
from .tracking import log_values, mlflow_client

WORKERS_ENV = "ACTGRAD_WORKERS"  # the default of --workers; pipeline/repro.py sets it to 1
CURVE_COLUMNS = ["step", "loss", "log10_loss", "loss_mean"]  # the lecture seed's, and the mean
OUTPUTS = ("model", "metrics", "curve", "series", "samples") + tuple(
    f"{kind}_figure" for kind in figures.TRAIN_FIGURES
)


def record(params, args):
    variant, seeds = args["variant"], params.train.seeds
    return records.Record(
        stage=f"train@{variant}",
        source="pipeline/train.py",
        name=variant,
        outputs={role: Path(args[role]) for role in OUTPUTS},
        fill=fill,
        tags={"variant": variant, "seeds": list(seeds)},
        children={s: (f"{variant} seed {s}", {"variant": variant, "seed": s}) for s in seeds},
        dataset=(Path(args["split"]), Path(args["summary"])),
    )


def fill(client, runs, record, params):
    """The variant's run: its metrics, the lecture seed's curve and the mean over seeds, the
    figures and files; each seed's run: its losses and its curves (the gradient norms stay in
    the CSV and the figure: thousands of points per seed, seconds of logging)."""
    outputs, variant = record.outputs, record.tags["variant"]
    train_params = {k: v for k, v in plain(params.train).items() if k != "seeds"}
    run_params = records.flatten(
        {"variant": plain(params.variants[variant]), "train": train_params}
    )
    metrics = records.read_json(outputs["metrics"])
    per_seed = metrics.pop("seeds")
    curve = records.read_series(outputs["curve"])
    log_values(client, runs.top, records.numbers(metrics), run_params, curve)
    series = records.read_series(outputs["series"], by="seed")
    for seed, run_id in runs.children.items():
        curves = {k: v for k, v in series[seed].items() if not k.startswith("grad_norm_")}
        log_values(client, run_id, records.numbers(per_seed[str(seed)]), run_params, curves)
    with tempfile.TemporaryDirectory() as tmp:
        seeds_figure = Path(tmp) / f"{variant}_loss_curve_seeds.png"
        steps = [step for step, _ in series[params.train.seeds[0]]["log10_loss"]]
        loss_curve_figure(
            {f"seed {s}": [v for _, v in series[s]["log10_loss"]] for s in runs.children},
            steps,
            f"{variant}: log10 loss, mean per {params.train.curve_every} steps",
            seeds_figure,
        )
        client.log_artifact(runs.top, str(seeds_figure))
    records.log_files(client, runs.top, [p for role, p in outputs.items() if role != "model"])
    models.log_model(client, runs, record, params)


def train(name, variant, cfg, splits, vocab, workers):
    """Every seed of the variant trained, with a progress bar and Ctrl-C honoured."""
    (X, Y), vocab_size = splits["train"], len(vocab)
    with progress_bar(cfg.steps, f"train@{name}") as bar:

        def on_chunk(step, losses):
            check_interrupted()
            bar.update(step - bar.n)
            bar.set_postfix(loss=f"{losses[0, -1].item():.4f}")

        return train_seeds(cfg.seeds, variant, cfg, X, Y, vocab_size, workers, on_chunk)


def write(out, paths, name, params, trained, splits, vocab):
    """Every output of the stage, staged in `out`; its metrics."""
    (weights, result), variant, cfg = trained, params.variants[name], params.train
    metrics = instruments.variant_metrics(weights, result, variant, cfg, splits, len(vocab))
    torch.save(weights.state_dict(), out.path(paths["model"]))
    out.json(paths["metrics"], metrics)
    out.csv(paths["curve"], CURVE_COLUMNS, instruments.curve_rows(result, cfg))
    columns = instruments.series_columns(weights.params)
    out.csv(paths["series"], columns, instruments.series_rows(weights, result, cfg))
    lecture = functools.partial(logits, weights.seed_slice(0), variant=variant)
    samples = sample_names(
        lecture, vocab, splits["train"][0].shape[1], cfg.samples, cfg.sample_seed
    )
    out.text(paths["samples"], "\n".join(samples) + "\n")
    kinds = {kind: out.path(paths[f"{kind}_figure"]) for kind in figures.TRAIN_FIGURES}
    figures.train_figures(name, variant, cfg, weights, result, kinds)
    return metrics


@click.command()
@click.argument("variant")
@click.option("--split", required=True, help="the split stage's folder")
@click.option("--summary", required=True, help="the split stage's summary JSON")
@click.option("--model", required=True)
@click.option("--metrics", required=True)
@click.option("--curve", required=True)
@click.option("--series", required=True)
@click.option("--samples", required=True)
@click.option("--init-figure", required=True)
@click.option("--update-ratio-figure", required=True)
@click.option("--units-figure", required=True)
@click.option(
    "--workers",
    type=int,
    default=lambda: int(os.environ.get(WORKERS_ENV, os.cpu_count())),
    show_default=f"${WORKERS_ENV}, else one per core",
    help="processes to spread the seeds over (the numbers do not depend on it)",
)
@stage_command
def main(variant, workers, **paths):
    params = read_params()
    spec, cfg, started = params.variant(variant), params.train, time.time()
    this = record(params, {"variant": variant, **paths})
    client, exp_id = mlflow_client()  # an unreachable server fails the stage before it trains
    splits = {name: load_split(paths["split"], name) for name in ("train", "val")}
    vocab = load_vocab(paths["split"])
    processes = f"{workers} process" + "es" * (workers > 1)
    log(f"train@{variant}: {len(cfg.seeds)} seeds x {cfg.steps:,} steps, {processes}")
    with records.open_runs(client, exp_id, this, params) as runs, writing() as out:
        try:
            trained = train(variant, spec, cfg, splits, vocab, workers)
        except Diverged as e:
            own = spec.optimizer is not cfg.optimizer
            lr = f"variants.{variant}.optimizer.lr" if own else "train.optimizer.lr"
            raise click.ClickException(
                f"train@{variant}: {e}; lower {lr} or raise train.max_loss"
            ) from None
        metrics = write(out, paths, variant, params, trained, splits, vocab)
        out.commit()
        records.log_outputs(client, runs, this, params)
    log(
        f"train@{variant}: done in {time.time() - started:.0f}s, "
        f"train {metrics['train_loss']:.4f} val {metrics['val_loss']:.4f} (seed {cfg.seeds[0]})"
    )


if __name__ == "__main__":
    run_stage(main)
