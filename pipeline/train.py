"""Stage train@<variant>: train every seed of one variant, evaluate, save, log to MLflow.

Writes models/<variant>.pt (every seed's weights), metrics/<variant>.json (losses, instruments
and the exercises' answers, per seed and for the lecture seed), metrics/curves/<variant>.csv
(the lecture seed's loss curve and the mean over seeds), metrics/series/<variant>.csv (every
seed's curves), three figures of the lecture seed and its sampled names.
"""

import math
import os
import time
from contextlib import ExitStack

import click
import torch

from actgrad import diagnostics, plots
from actgrad.config import ParamsError
from actgrad.errors import Diverged
from actgrad.init import draw
from actgrad.model import seed_losses
from actgrad.summary import seed_summary
from actgrad.train import MATRICES, SeedGroups, curve, merge, unit_steps

from . import records
from .inputs import load_split, load_vocab
from .outputs import atomic_path, write_csv, write_json, write_text
from .params import read_params
from .stage import check_interrupted, log, progress_bar, run_stage, stage_command
from .tracking import mlflow_client

CURVE_COLUMNS = ["step", "loss", "log10_loss", "loss_mean"]  # the lecture seed's, and the mean
WORKERS_ENV = "ACTGRAD_WORKERS"  # the default of --workers; pipeline/repro.py sets it to 1


def series_columns(tensors):
    ratios = [f"log10_update_ratio_{name}" for name in MATRICES]
    norms = [f"grad_norm_{name}" for name in tensors]
    return ["seed", "step", "loss", "log10_loss", *ratios, *norms, "dead_units", "distinct_units"]


def ratio_steps(cfg):
    return list(range(0, cfg.steps, cfg.ratio_every))


def init_instruments(seed, variant, cfg, X, vocab_size, title, color, figure):
    """Inactive units at init on the first minibatch the seed trains on; the init figure."""
    w, g = draw(seed, variant, vocab_size, X.shape[1], cfg.n_embd, cfg.n_hidden)
    w = {name: t.view(-1, t.shape[-1]) for name, t in w.items()}  # vectors as (1, n)
    batch = X[torch.randint(0, X.shape[0], (cfg.batch_size,), generator=g)]
    z, h = diagnostics.init_activations(w, batch, variant)
    inactive, fraction, dead = diagnostics.inactive_units(z, h, variant.activation)
    with atomic_path(figure) as tmp:
        plots.init_figure(z, h, inactive, variant.activation, title, color, tmp)
    return {"init_inactive_fraction": fraction, "init_dead_units": dead}, w


def lecture_seed_instruments(name, variant, cfg, X, vocab, own, figures):
    """Metrics, figures and sampled names of the lecture seed, the first of this process's group.

    The exercises' answers: which tensors ever got a non-zero gradient, from which recorded
    step, and which ended where they started.
    """
    seed = cfg.seeds[0]
    metrics = {
        "init_ideal_loss": diagnostics.ideal_init_loss(len(vocab)),
        "inactive_rule": variant.activation.inactive_rule,
    }
    init, w0 = init_instruments(
        seed,
        variant,
        cfg,
        X,
        len(vocab),
        f"{name} at initialisation (seed {seed}, first batch)",
        plots.variant_color(name),
        figures["init"],
    )
    metrics.update(init)
    weights, result = own
    steps = ratio_steps(cfg)
    early = [k for k, step in enumerate(steps) if step < 1000]
    ud = result.update_ratio[0]
    metrics["log10_update_ratio_first_1000_steps"] = dict(zip(MATRICES, ud[early].mean(0).tolist()))
    tensors = list(weights.params)
    first = diagnostics.first_nonzero_steps(result.grad_norm[0], steps)
    metrics["first_nonzero_grad_step"] = {tensors[k]: step for k, step in first.items()}
    metrics["changed_from_init"] = {
        n: not torch.equal(weights.params[n][0], w0[n]) for n in tensors
    }
    with atomic_path(figures["update_ratio"]) as tmp:
        plots.update_ratio_figure(
            steps,
            dict(zip(MATRICES, ud.T.tolist())),
            f"{name}: update:data ratio, std(θ after - θ before) / std(θ after) (seed {seed})",
            tmp,
        )
    units = unit_steps(cfg)
    norms = "gradient norm of each tensor"
    with atomic_path(figures["units"]) as tmp:
        plots.series_figure(
            {
                norms: (steps, dict(zip(tensors, result.grad_norm[0].T.tolist()))),
                f"dead units: inactive ({metrics['inactive_rule'] or 'never'}) on every "
                "training context": (units, {"dead": result.dead_units[0].tolist()}),
                "distinct hidden units (W1 column, b1)": (
                    units,
                    {"distinct": result.distinct_units[0].tolist()},
                ),
            },
            f"{name}: gradients and hidden units over training (seed {seed})",
            tmp,
            symlog=(norms,),
        )
    samples = diagnostics.sample_names(
        weights.seed_slice(0), variant, vocab, X.shape[1], cfg.samples, cfg.sample_seed
    )
    return metrics, samples


def evaluate_group(part, variant, splits, cfg):
    """Each seed's losses and hidden-unit counts of one group, and its rows of the series CSV.

    The series hold per `curve_every` steps the mean loss, update:data ratios and gradient
    norms, and the dead and distinct units where they were counted (NaN elsewhere).
    """
    weights, result = part
    losses = {
        f"{name}_loss": seed_losses(weights, variant, X, Y) for name, (X, Y) in splits.items()
    }
    losses["init_loss"] = result.losses[:, 0].tolist()
    X, Y = splits["val"]
    losses["one_unit_val_loss"] = [
        diagnostics.one_unit_loss(weights.seed_slice(s), variant, X, Y)
        for s in range(len(weights.seeds))
    ]
    losses["dead_units_final"] = result.dead_units[:, -1].tolist()
    losses["dead_units_max"] = result.dead_units.max(1).values.tolist()
    losses["distinct_units_final"] = result.distinct_units[:, -1].tolist()
    blocks = list(range(0, cfg.steps, cfg.curve_every))
    loss_curve = curve(result.losses, cfg.curve_every).tolist()
    log10_curve = curve(result.losses.log10(), cfg.curve_every).tolist()
    steps = ratio_steps(cfg)
    ratios = diagnostics.block_means(result.update_ratio.transpose(0, 1), steps, cfg.curve_every)
    norms = diagnostics.block_means(result.grad_norm.transpose(0, 1), steps, cfg.curve_every)
    counted = {step: k for k, step in enumerate(unit_steps(cfg))}
    rows = []
    for i, seed in enumerate(weights.seeds):
        for b, step in enumerate(blocks):
            k = counted.get(step)
            units = (
                [math.nan, math.nan]
                if k is None
                else [
                    result.dead_units[i, k].item(),
                    result.distinct_units[i, k].item(),
                ]
            )
            rows.append(
                (
                    seed,
                    step,
                    loss_curve[i][b],
                    log10_curve[i][b],
                    *ratios[b, i].tolist(),
                    *norms[b, i].tolist(),
                    *units,
                )
            )
    return losses, rows


def train_variant(name, params, data, workers):
    variant, cfg = params.variants[name], params.train
    (X, Y), vocab = load_split(data, "train"), load_vocab(data)
    torch.set_num_threads(1)
    started = time.time()
    # the other groups of seeds start training now, while this process sets up MLflow
    groups = SeedGroups(cfg.seeds, variant, cfg, X, Y, len(vocab), workers)
    record = records.train(params, name)
    with groups, ExitStack() as stack:
        client, exp_id = mlflow_client()
        splits = {"train": (X, Y), "val": load_split(data, "val")}
        log(
            f"train@{name}: {len(cfg.seeds)} seeds x {cfg.steps:,} steps, "
            f"{workers} process{'es' if workers > 1 else ''}"
        )
        runs = stack.enter_context(records.open_runs(client, exp_id, record, params))
        with progress_bar(cfg.steps, f"train@{name}") as bar:

            def on_chunk(step, losses):
                check_interrupted()
                bar.update(step - bar.n)
                bar.set_postfix(loss=f"{losses[0, -1].item():.4f}")

            own = groups.train_own(on_chunk)

        # while the other processes finish their seeds
        outputs = record.outputs
        figures = {k: outputs[k] for k in ("init", "update_ratio", "units")}
        instruments, samples = lecture_seed_instruments(name, variant, cfg, X, vocab, own, figures)
        per_seed, series = evaluate_group(own, variant, splits, cfg)
        others = groups.others()
        check_interrupted()
        for part in others:
            values, rows = evaluate_group(part, variant, splits, cfg)
            for key, seed_values in values.items():
                per_seed[key] += seed_values
            series += rows
        weights, result = merge([own, *others])

        metrics = {key: values[0] for key, values in per_seed.items()}
        metrics["seeds"] = {
            str(s): {key: values[i] for key, values in per_seed.items()}
            for i, s in enumerate(cfg.seeds)
        }
        metrics.update(seed_summary(per_seed))
        metrics.update(instruments)
        metrics["unigram_train_loss"] = diagnostics.unigram_loss(Y, len(vocab))

        blocks = list(range(0, cfg.steps, cfg.curve_every))
        loss_curve = curve(result.losses, cfg.curve_every)
        log10_curve = curve(result.losses.log10(), cfg.curve_every)
        with atomic_path(outputs["model"]) as tmp:
            torch.save(weights.state_dict(), tmp)
        write_json(outputs["metrics"], metrics)
        curves = zip(
            blocks, loss_curve[0].tolist(), log10_curve[0].tolist(), loss_curve.mean(0).tolist()
        )
        write_csv(outputs["curve"], CURVE_COLUMNS, curves)
        write_csv(outputs["series"], series_columns(weights.params), series)
        write_text(outputs["samples"], "\n".join(samples) + "\n")
        records.log_outputs(client, runs, record, params)
    log(
        f"train@{name}: done in {time.time() - started:.0f}s, "
        f"train {metrics['train_loss']:.4f} val {metrics['val_loss']:.4f} (seed {cfg.seeds[0]})"
    )


@click.command()
@click.argument("variant")
@click.option("--data", default="data/split", show_default=True)
@click.option(
    "--workers",
    type=int,
    default=lambda: int(os.environ.get(WORKERS_ENV, os.cpu_count())),
    show_default=f"${WORKERS_ENV}, else one per core",
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
        own = params.variants[variant].optimizer is not params.train.optimizer
        lr = f"variants.{variant}.optimizer.lr" if own else "train.optimizer.lr"
        raise click.ClickException(
            f"train@{variant}: {e}; lower {lr} or raise train.max_loss"
        ) from None


if __name__ == "__main__":
    run_stage(main)
