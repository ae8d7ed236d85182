"""Stage train@<variant>: train every seed of one variant, evaluate, save, log to MLflow."""

import dataclasses
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
from actgrad.train import MATRICES, Diverged, curve, train_seeds

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


def init_diagnostics(seed, recipe, cfg, X, vocab_size, title, color, figure):
    """Saturation at init on the first minibatch the seed trains on; writes the init figure."""
    w, g = init_one(seed, recipe, vocab_size, X.shape[1], cfg.n_embd, cfg.n_hidden)
    batch = X[torch.randint(0, X.shape[0], (cfg.batch_size,), generator=g)]
    hpre, h = diagnostics.init_activations(w, batch)
    saturated, fraction, dead = diagnostics.saturation(h)
    with atomic_path(figure) as tmp:
        plots.init_figure(hpre, h, saturated, title, color, tmp)
    return {"init_saturated_fraction": fraction, "init_dead_neurons": dead}


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

        # the lecture's instruments, at the lecture seed
        vocab = load_vocab(data)
        color = plots.variant_color(variant)
        figures = {k: Path(f"reports/figures/{variant}_{k}.png") for k in ("init", "update_ratio")}
        metrics["init_ideal_loss"] = diagnostics.ideal_init_loss(len(vocab))
        metrics.update(
            init_diagnostics(
                cfg.seeds[0],
                recipe,
                cfg,
                X,
                len(vocab),
                f"{variant} at initialisation (seed {cfg.seeds[0]}, first batch)",
                color,
                figures["init"],
            )
        )
        ratio_steps = list(range(0, cfg.steps, cfg.ratio_every))
        ud = diagnostics.log10_update_ratios(
            result.grad_data.transpose(0, 1), ratio_steps, cfg.lr_at
        )
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
        for i, run_id in enumerate(children):
            series = {
                "loss_curve": zip(block_steps, loss_curve[i].tolist()),
                "log10_loss_curve": zip(block_steps, log10_curve[i].tolist()),
            }
            for k, name in enumerate(MATRICES):
                series[f"log10_update_ratio_{name}"] = zip(ratio_steps, ud[:, i, k].tolist())
            per_seed_metrics = {key: values[i] for key, values in per_seed.items()}
            log_values(client, run_id, per_seed_metrics, run_params, series)
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


if __name__ == "__main__":
    main()
