"""What the train stage reports of a variant's trained seeds: the losses, the exercises' answers
and the lecture seed's instruments (its metrics JSON), and every seed's curves (its series and
curve CSVs). Plain numbers and rows; the stage writes them."""

import math

import torch

from ..stats import block_means, curve, seed_table
from .calibration import calibrate
from .network import one_unit, seed_losses
from .probes import MATRICES


def ideal_init_loss(vocab_size):
    """The loss of a uniform prediction, -log(1/vocab_size): what a good init starts at."""
    return -math.log(1 / vocab_size)


def inactive_units(z, h, activation):
    """(inactive map or None, fraction of inactive entries, units inactive for every example),
    by the activation's own rule (its `inactive_rule`); None and NaNs where it has none."""
    inactive = activation.inactive(z, h)
    if inactive is None:
        return None, math.nan, math.nan
    return inactive, inactive.float().mean().item(), int(inactive.all(0).sum())


def ratio_steps(cfg):
    """The steps at which update:data ratios and gradient norms are recorded."""
    return list(range(0, cfg.steps, cfg.ratio_every))


def unit_steps(cfg):
    """The steps at which dead and distinct units are counted: every units_every, and the end."""
    return [*range(0, cfg.steps, cfg.units_every), cfg.steps]


def first_nonzero_steps(grad_norm, steps):
    """{tensor index: the first recorded step with a non-zero gradient norm, or None} of one
    seed's (records, tensors) gradient norms."""
    first = {}
    for k in range(grad_norm.shape[1]):
        nonzero = (grad_norm[:, k] > 0).nonzero()
        first[k] = steps[int(nonzero[0])] if len(nonzero) else None
    return first


def unigram_loss(Y, vocab_size):
    """The cross-entropy of predicting every next character by its frequency in Y: the best a
    model can do with b2 alone (the output bias only sets the unigram distribution)."""
    counts = torch.bincount(Y, minlength=vocab_size).double()
    p = counts / counts.sum()
    return -(p[p > 0] * p[p > 0].log()).sum().item()


def lecture_seed(weights, result, activation, cfg, vocab_size, Y):
    """What the report reads of the lecture seed (the first): the inactive units at init, the
    update:data ratios of the first 1,000 steps and the exercises' answers, which tensors ever
    got a non-zero gradient (from which recorded step) and which ended where they started."""
    _, fraction, dead = inactive_units(result.init_z[0], result.init_h[0], activation)
    steps = ratio_steps(cfg)
    early = [k for k, step in enumerate(steps) if step < 1000]
    tensors = list(weights.params)
    first = first_nonzero_steps(result.grad_norm[0], steps)
    return {
        "init_ideal_loss": ideal_init_loss(vocab_size),
        "inactive_rule": activation.inactive_rule,
        "init_inactive_fraction": fraction,
        "init_dead_units": dead,
        "log10_update_ratio_first_1000_steps": dict(
            zip(MATRICES, result.update_ratio[0][early].mean(0).tolist())
        ),
        "first_nonzero_grad_step": {tensors[k]: step for k, step in first.items()},
        "changed_from_init": dict(zip(tensors, result.changed[0].tolist())),
        "unigram_train_loss": unigram_loss(Y, vocab_size),
    }


CALIBRATION_GAPS = ("mean_max_abs_diff", "std_max_rel_diff", "val_loss")


def variant_metrics(weights, result, variant, cfg, splits, vocab_size):
    """The train stage's metrics JSON, measured in one pass down the layers: the lecture seed's
    numbers at the top, every seed's under "seeds", their mean and sd, and the lecture seed's
    instruments. Every seed is scored on each split; where every seed's units ended as copies of
    one, also the network cut to that one unit (elsewhere that loss means nothing, and it moves
    far more than the model's own loss from CPU to CPU); beside BatchNorm, how far its running
    statistics are from the calibrated ones."""
    lecture = lecture_seed(weights, result, variant.activation, cfg, vocab_size, splits["train"][1])
    scored = {f"{name}_loss": (weights, X, Y) for name, (X, Y) in splits.items()}
    if (result.distinct_units[:, -1] == 1).all():
        scored["one_unit_val_loss"] = (one_unit(weights), *splits["val"])
    losses = {key: seed_losses(w, variant, X, Y) for key, (w, X, Y) in scored.items()}
    calibrated = {}
    if variant.batchnorm:
        gaps = calibrate(weights, variant, splits)[0]["seeds"].values()
        calibrated = {f"calibrated_{key}": [gap[key] for gap in gaps] for key in CALIBRATION_GAPS}
    per_seed = {key: losses.pop(key) for key in ("train_loss", "val_loss")}
    per_seed["init_loss"] = result.losses[:, 0].tolist()
    per_seed |= losses | unit_counts(result) | calibrated
    return seed_table(per_seed, weights.seeds) | lecture


def unit_counts(result):
    """{count: [one value per seed]}: the dead, distinct and negative hidden units and the
    distinct embedding dimensions and W1 rows, at the end (and the dead units' most, the negative
    units at init)."""
    return {
        "dead_units_final": result.dead_units[:, -1].tolist(),
        "dead_units_max": result.dead_units.max(1).values.tolist(),
        "distinct_units_final": result.distinct_units[:, -1].tolist(),
        "negative_units_init": result.negative_units[:, 0].tolist(),
        "negative_units_final": result.negative_units[:, -1].tolist(),
        "distinct_dims_final": result.distinct_dims[:, -1].tolist(),
        "distinct_w1_rows_final": result.distinct_w1_rows[:, -1].tolist(),
    }


SERIES_UNITS = ("dead_units", "distinct_units", "negative_units", "distinct_dims")


def series_columns(tensors):
    """The columns of a variant's series CSV, for its trained tensors."""
    ratios = [f"log10_update_ratio_{name}" for name in MATRICES]
    norms = [f"grad_norm_{name}" for name in tensors]
    return ["seed", "step", "loss", "log10_loss", *ratios, *norms, *SERIES_UNITS]


def series_rows(weights, result, cfg):
    """Every seed's rows of the series CSV: per `curve_every` steps the mean loss, update:data
    ratios and gradient norms, and the counts of units and dimensions where they were counted
    (NaN elsewhere)."""
    blocks = list(range(0, cfg.steps, cfg.curve_every))
    loss_curve = curve(result.losses, cfg.curve_every).tolist()
    log10_curve = curve(result.losses.log10(), cfg.curve_every).tolist()
    steps = ratio_steps(cfg)
    ratios = block_means(result.update_ratio.transpose(0, 1), steps, cfg.curve_every)
    norms = block_means(result.grad_norm.transpose(0, 1), steps, cfg.curve_every)
    counted = {step: k for k, step in enumerate(unit_steps(cfg))}
    rows = []
    for i, seed in enumerate(weights.seeds):
        for b, step in enumerate(blocks):
            k = counted.get(step)
            counts = [getattr(result, name) for name in SERIES_UNITS]
            units = [math.nan] * len(counts) if k is None else [c[i, k].item() for c in counts]
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
    return rows


def curve_rows(result, cfg):
    """(step, loss, log10 loss, mean loss over seeds) per block: the lecture seed's curve."""
    loss_curve = curve(result.losses, cfg.curve_every)
    log10_curve = curve(result.losses.log10(), cfg.curve_every)
    blocks = range(0, cfg.steps, cfg.curve_every)
    columns = (loss_curve[0].tolist(), log10_curve[0].tolist(), loss_curve.mean(0).tolist())
    return list(zip(blocks, *columns))
