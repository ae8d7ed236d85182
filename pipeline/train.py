"""Stage train@<variant>: train every seed of one variant, evaluate, save, log to MLflow."""

import dataclasses
import math
import os
import tempfile
import time
from contextlib import ExitStack
from pathlib import Path

import click
import torch

from actgrad import diagnostics, plots
from actgrad.config import ParamsError
from actgrad.model import init_one, seed_losses
from actgrad.summary import seed_summary
from actgrad.train import MATRICES, Diverged, SeedGroups, curve, merge

from .common import (
    atomic_path,
    check_interrupted,
    flat_metrics,
    load_split,
    load_vocab,
    log,
    log_values,
    mlflow_client,
    mlflow_run,
    progress_bar,
    read_params,
    run_stage,
    run_tags,
    stage_command,
    write_json,
    write_text,
)


def curve_csv(steps, loss, log10_loss, loss_mean):
    rows = ["step,loss,log10_loss,loss_mean"]
    rows += [f"{s},{a!r},{b!r},{c!r}" for s, a, b, c in zip(steps, loss, log10_loss, loss_mean)]
    return "\n".join(rows) + "\n"


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


def log_group(client, seed_runs, run_params, part, splits, cfg):
    """Each seed's losses of one group, logged with its curves to the seed's run; returns them.

    The run gets the loss curves and the update:data ratios as means per `curve_every` steps.
    """
    weights, result = part
    losses = {f"{name}_loss": seed_losses(weights, X, Y) for name, (X, Y) in splits.items()}
    losses["init_loss"] = result.losses[:, 0].tolist()
    block_steps = list(range(0, cfg.steps, cfg.curve_every))
    loss_curve = curve(result.losses, cfg.curve_every)
    log10_curve = curve(result.losses.log10(), cfg.curve_every)
    ud, ratio_steps = update_ratios(result, cfg)
    ratio_blocks = diagnostics.block_means(ud, ratio_steps, cfg.curve_every)
    for i, seed in enumerate(weights.seeds):
        series = {
            "loss_curve": zip(block_steps, loss_curve[i].tolist()),
            "log10_loss_curve": zip(block_steps, log10_curve[i].tolist()),
        }
        for k, name in enumerate(MATRICES):
            points = zip(block_steps, ratio_blocks[:, i, k].tolist())
            series[f"log10_update_ratio_{name}"] = [(s, v) for s, v in points if math.isfinite(v)]
        run_id = seed_runs[seed]
        log_values(client, run_id, {k: v[i] for k, v in losses.items()}, run_params, series)
    return losses


def train_variant(variant, params, data, workers):
    recipe, cfg = params.variants[variant], params.train
    (X, Y), vocab = load_split(data, "train"), load_vocab(data)
    torch.set_num_threads(1)
    started = time.time()
    # the other groups of seeds start training now, while this process sets up MLflow
    groups = SeedGroups(cfg.seeds, recipe, cfg, X, Y, len(vocab), workers)
    with groups, ExitStack() as stack:
        client, exp_id = mlflow_client()
        splits = {"train": (X, Y), "val": load_split(data, "val")}
        log(f"train@{variant}: {len(cfg.seeds)} seeds x {cfg.steps:,} steps, {workers} processes")
        tags = run_tags(variant=variant)
        run_params = {f"variant.{k}": v for k, v in dataclasses.asdict(recipe).items()}
        run_params.update(
            {f"train.{k}": v for k, v in dataclasses.asdict(cfg).items() if k != "seeds"}
        )
        parent = stack.enter_context(
            mlflow_run(client, exp_id, variant, {**tags, "seeds": cfg.seeds})
        )
        seed_runs = {
            s: stack.enter_context(
                mlflow_run(client, exp_id, f"{variant} seed {s}", {**tags, "seed": s}, parent)
            )
            for s in cfg.seeds
        }
        with progress_bar(cfg.steps, f"train@{variant}") as bar:

            def on_chunk(step, losses):
                check_interrupted()
                bar.update(step - bar.n)
                bar.set_postfix(loss=f"{losses[0, -1].item():.4f}")

            own = groups.train_own(on_chunk)

        # while the other processes finish their seeds
        figures = {k: Path(f"reports/figures/{variant}_{k}.png") for k in ("init", "update_ratio")}
        instruments, samples = lecture_seed_instruments(
            variant, recipe, cfg, X, vocab, own, figures
        )
        per_seed = log_group(client, seed_runs, run_params, own, splits, cfg)
        others = groups.others()
        check_interrupted()
        for part in others:
            for key, values in log_group(client, seed_runs, run_params, part, splits, cfg).items():
                per_seed[key] += values
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
        with atomic_path(f"models/{variant}.pt") as tmp:
            torch.save(weights.state_dict(), tmp)
        outputs = {
            "metrics": Path(f"metrics/{variant}.json"),
            "curve": Path(f"metrics/curves/{variant}.csv"),
            "samples": Path(f"reports/samples/{variant}.txt"),
        }
        write_json(outputs["metrics"], metrics)
        write_text(
            outputs["curve"],
            curve_csv(
                block_steps,
                loss_curve[0].tolist(),
                log10_curve[0].tolist(),
                loss_curve.mean(0).tolist(),
            ),
        )
        write_text(outputs["samples"], "\n".join(samples) + "\n")

        log_values(client, parent, flat_metrics(metrics), run_params)
        with tempfile.TemporaryDirectory() as tmp:
            seeds_figure = Path(tmp) / f"{variant}_loss_curve_seeds.png"
            plots.loss_curve_figure(
                {f"seed {s}": c for s, c in zip(cfg.seeds, log10_curve.tolist())},
                block_steps,
                f"{variant}: log10 loss, mean per {cfg.curve_every} steps",
                seeds_figure,
            )
            for path in [seeds_figure, *figures.values(), *outputs.values()]:
                client.log_artifact(parent, str(path))
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
