"""Stage train@<variant>: train every seed of one variant, evaluate, save, log to MLflow."""

import os
import time
from contextlib import ExitStack

import click
import torch

from actgrad import diagnostics, plots
from actgrad.config import ParamsError
from actgrad.model import init_one, seed_losses
from actgrad.summary import seed_summary
from actgrad.train import MATRICES, Diverged, SeedGroups, curve, merge

from . import records
from .inputs import load_split, load_vocab
from .outputs import atomic_path, write_csv, write_json, write_text
from .params import read_params
from .stage import check_interrupted, log, progress_bar, run_stage, stage_command
from .tracking import mlflow_client

CURVE_COLUMNS = ["step", "loss", "log10_loss", "loss_mean"]  # the lecture seed's, and the mean
SERIES_COLUMNS = ["seed", "step", "loss", "log10_loss"]
SERIES_COLUMNS += [f"log10_update_ratio_{name}" for name in MATRICES]


def init_diagnostics(seed, recipe, cfg, X, vocab_size, title, color, figure):
    """Saturation at init on the first minibatch the seed trains on; writes the init figure."""
    w, g = init_one(seed, recipe, vocab_size, X.shape[1], cfg.n_embd, cfg.n_hidden)
    batch = X[torch.randint(0, X.shape[0], (cfg.batch_size,), generator=g)]
    hpre, h = diagnostics.init_activations(w, batch)
    saturated, fraction, dead = diagnostics.saturation(h)
    with atomic_path(figure) as tmp:
        plots.init_figure(hpre, h, saturated, title, color, tmp)
    return {"init_saturated_fraction": fraction, "init_dead_neurons": dead}


def lecture_seed_instruments(variant, recipe, cfg, X, vocab, own, figures):
    """Metrics, figures and sampled names of the lecture seed, the first of this process's group."""
    metrics = {"init_ideal_loss": diagnostics.ideal_init_loss(len(vocab))}
    metrics.update(
        init_diagnostics(
            cfg.seeds[0],
            recipe,
            cfg,
            X,
            len(vocab),
            f"{variant} at initialisation (seed {cfg.seeds[0]}, first batch)",
            plots.variant_color(variant),
            figures["init"],
        )
    )
    weights, result = own
    ud, ratio_steps = update_ratios(result, cfg)
    early = [k for k, step in enumerate(ratio_steps) if step < 1000]
    metrics["log10_update_ratio_first_1000_steps"] = dict(
        zip(MATRICES, ud[early, 0].mean(0).tolist())
    )
    metrics["grad_data_final"] = dict(zip(MATRICES, result.grad_data[0, -1].tolist()))
    with atomic_path(figures["update_ratio"]) as tmp:
        plots.update_ratio_figure(
            ratio_steps,
            dict(zip(MATRICES, ud[:, 0].T.tolist())),
            f"{variant}: update:data ratio (seed {cfg.seeds[0]})",
            tmp,
        )
    samples = diagnostics.sample_names(
        weights.seed_slice(0), vocab, X.shape[1], cfg.samples, cfg.sample_seed
    )
    return metrics, samples


def update_ratios(result, cfg):
    """log10 update:data ratios, (recorded steps, S, len(MATRICES)), and those steps."""
    steps = list(range(0, cfg.steps, cfg.ratio_every))
    grad_data = result.grad_data.transpose(0, 1)
    return diagnostics.log10_update_ratios(grad_data, steps, cfg.lr_at), steps


def evaluate_group(part, splits, cfg):
    """Each seed's losses of one group, and its curves as rows of the series CSV.

    The curves are the loss and the update:data ratios as means per `curve_every` steps.
    """
    weights, result = part
    losses = {f"{name}_loss": seed_losses(weights, X, Y) for name, (X, Y) in splits.items()}
    losses["init_loss"] = result.losses[:, 0].tolist()
    block_steps = list(range(0, cfg.steps, cfg.curve_every))
    loss_curve = curve(result.losses, cfg.curve_every).tolist()
    log10_curve = curve(result.losses.log10(), cfg.curve_every).tolist()
    ud, ratio_steps = update_ratios(result, cfg)
    ratio_blocks = diagnostics.block_means(ud, ratio_steps, cfg.curve_every).tolist()
    rows = [
        (seed, step, loss_curve[i][b], log10_curve[i][b], *ratio_blocks[b][i])
        for i, seed in enumerate(weights.seeds)
        for b, step in enumerate(block_steps)
    ]
    return losses, rows


def train_variant(variant, params, data, workers):
    recipe, cfg = params.variants[variant], params.train
    (X, Y), vocab = load_split(data, "train"), load_vocab(data)
    torch.set_num_threads(1)
    started = time.time()
    # the other groups of seeds start training now, while this process sets up MLflow
    groups = SeedGroups(cfg.seeds, recipe, cfg, X, Y, len(vocab), workers)
    record = records.train(params, variant)
    with groups, ExitStack() as stack:
        client, exp_id = mlflow_client()
        splits = {"train": (X, Y), "val": load_split(data, "val")}
        log(f"train@{variant}: {len(cfg.seeds)} seeds x {cfg.steps:,} steps, {workers} processes")
        runs = stack.enter_context(records.open_runs(client, exp_id, record, params))
        with progress_bar(cfg.steps, f"train@{variant}") as bar:

            def on_chunk(step, losses):
                check_interrupted()
                bar.update(step - bar.n)
                bar.set_postfix(loss=f"{losses[0, -1].item():.4f}")

            own = groups.train_own(on_chunk)

        # while the other processes finish their seeds
        outputs = record.outputs
        figures = {k: outputs[k] for k in ("init", "update_ratio")}
        instruments, samples = lecture_seed_instruments(
            variant, recipe, cfg, X, vocab, own, figures
        )
        per_seed, series = evaluate_group(own, splits, cfg)
        others = groups.others()
        check_interrupted()
        for part in others:
            losses, rows = evaluate_group(part, splits, cfg)
            for key, values in losses.items():
                per_seed[key] += values
            series += rows
        weights, result = merge([own, *others])

        metrics = {key: values[0] for key, values in per_seed.items()}
        metrics["seeds"] = {
            str(s): {key: values[i] for key, values in per_seed.items()}
            for i, s in enumerate(cfg.seeds)
        }
        metrics.update(seed_summary(per_seed))
        metrics.update(instruments)

        block_steps = list(range(0, cfg.steps, cfg.curve_every))
        loss_curve = curve(result.losses, cfg.curve_every)
        log10_curve = curve(result.losses.log10(), cfg.curve_every)
        with atomic_path(outputs["model"]) as tmp:
            torch.save(weights.state_dict(), tmp)
        write_json(outputs["metrics"], metrics)
        curves = zip(
            block_steps,
            loss_curve[0].tolist(),
            log10_curve[0].tolist(),
            loss_curve.mean(0).tolist(),
        )
        write_csv(outputs["curve"], CURVE_COLUMNS, curves)
        write_csv(outputs["series"], SERIES_COLUMNS, series)
        write_text(outputs["samples"], "\n".join(samples) + "\n")
        records.log_outputs(client, runs, record, params)
    log(
        f"train@{variant}: done in {time.time() - started:.0f}s, "
        f"train {metrics['train_loss']:.4f} val {metrics['val_loss']:.4f} (seed {cfg.seeds[0]})"
    )


@click.command()
@click.argument("variant")
@click.option("--data", default="data/split", show_default=True)
@click.option(
    "--workers",
    default=os.cpu_count(),
    show_default=True,
    help="processes to spread the seeds over (the numbers do not depend on it)",
)
@stage_command
def main(variant, data, workers):
    params = read_params()
    if variant not in params.variants:
        raise ParamsError(
            f"variants.{variant}: no such variant; choose one of {sorted(params.variants)}"
        )
    try:
        train_variant(variant, params, data, workers)
    except Diverged as e:
        raise click.ClickException(
            f"train@{variant}: {e}; lower train.lr or raise train.max_loss"
        ) from None


if __name__ == "__main__":
    run_stage(main)
