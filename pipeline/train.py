"""Stage train@<variant>: train every seed of one variant, evaluate, save, log to MLflow."""

import dataclasses
import os
import tempfile
import time
from contextlib import ExitStack
from pathlib import Path

import click
import torch

from actgrad.config import ParamsError
from actgrad.model import seed_losses
from actgrad.plots import loss_curve_figure
from actgrad.report import seed_summary
from actgrad.train import Diverged, curve, train_seeds

from .common import (
    atomic_path,
    flat_metrics,
    load_split,
    load_vocab,
    log,
    log_values,
    mlflow_client,
    mlflow_run,
    progress_bar,
    read_params,
    run_tags,
    stage_command,
    write_json,
    write_text,
)


def curve_csv(steps, loss, log10_loss, loss_mean):
    rows = ["step,loss,log10_loss,loss_mean"]
    rows += [f"{s},{a!r},{b!r},{c!r}" for s, a, b, c in zip(steps, loss, log10_loss, loss_mean)]
    return "\n".join(rows) + "\n"


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
    recipe, cfg = params.variants[variant], params.train
    client, exp_id = mlflow_client()
    (X, Y), (Xval, Yval) = load_split(data, "train"), load_split(data, "val")
    torch.set_num_threads(1)
    log(f"train@{variant}: {len(cfg.seeds)} seeds x {cfg.steps:,} steps, {workers} processes")
    started = time.time()

    tags = run_tags(variant=variant)
    run_params = {f"variant.{k}": v for k, v in dataclasses.asdict(recipe).items()}
    run_params.update({f"train.{k}": v for k, v in dataclasses.asdict(cfg).items() if k != "seeds"})
    with ExitStack() as stack:
        parent = stack.enter_context(
            mlflow_run(client, exp_id, variant, {**tags, "seeds": cfg.seeds})
        )
        children = [
            stack.enter_context(
                mlflow_run(client, exp_id, f"{variant} seed {s}", {**tags, "seed": s}, parent)
            )
            for s in cfg.seeds
        ]
        with progress_bar(cfg.steps, f"train@{variant}") as bar:

            def on_chunk(step, losses):
                bar.update(step - bar.n)
                bar.set_postfix(loss=f"{losses[0, -1].item():.4f}")

            try:
                weights, result = train_seeds(
                    cfg.seeds, recipe, cfg, X, Y, len(load_vocab(data)), workers, on_chunk
                )
            except Diverged as e:
                raise click.ClickException(
                    f"train@{variant}: {e}; lower train.lr or raise train.max_loss"
                ) from None

        per_seed = {
            "train_loss": seed_losses(weights, X, Y),
            "val_loss": seed_losses(weights, Xval, Yval),
            "init_loss": result.losses[:, 0].tolist(),
        }
        metrics = {key: values[0] for key, values in per_seed.items()}
        metrics["seeds"] = {
            str(s): {key: values[i] for key, values in per_seed.items()}
            for i, s in enumerate(cfg.seeds)
        }
        metrics.update(seed_summary(per_seed))
        block_steps = list(range(0, cfg.steps, cfg.curve_every))
        loss_curve = curve(result.losses, cfg.curve_every)
        log10_curve = curve(result.losses.log10(), cfg.curve_every)

        with atomic_path(f"models/{variant}.pt") as tmp:
            torch.save(weights.state_dict(), tmp)
        write_json(f"metrics/{variant}.json", metrics)
        write_text(
            f"metrics/curves/{variant}.csv",
            curve_csv(
                block_steps,
                loss_curve[0].tolist(),
                log10_curve[0].tolist(),
                loss_curve.mean(0).tolist(),
            ),
        )

        log_values(client, parent, flat_metrics(metrics), run_params)
        for i, run_id in enumerate(children):
            log_values(
                client,
                run_id,
                {key: values[i] for key, values in per_seed.items()},
                run_params,
                {
                    "loss_curve": zip(block_steps, loss_curve[i].tolist()),
                    "log10_loss_curve": zip(block_steps, log10_curve[i].tolist()),
                },
            )
        with tempfile.TemporaryDirectory() as tmp:
            figure = Path(tmp) / f"loss_curve_{variant}.png"
            loss_curve_figure(
                {f"seed {s}": c for s, c in zip(cfg.seeds, log10_curve.tolist())},
                block_steps,
                f"{variant}: log10 loss, mean per {cfg.curve_every} steps",
                figure,
            )
            client.log_artifact(parent, figure)
            client.log_artifact(parent, f"metrics/{variant}.json")
            client.log_artifact(parent, f"metrics/curves/{variant}.csv")
    log(
        f"train@{variant}: done in {time.time() - started:.0f}s, "
        f"train {metrics['train_loss']:.4f} val {metrics['val_loss']:.4f} (seed {cfg.seeds[0]})"
    )


if __name__ == "__main__":
    main()
