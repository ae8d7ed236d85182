"""The figures of a trained variant, at its lecture seed (the first), as PNG bytes by kind."""

from ..plots import (
    init_figure,
    loss_curve_figure,
    series_figure,
    update_ratio_figure,
    variant_color,
)
from ..stats import curve
from .metrics import ratio_steps, unit_steps
from .probes import MATRICES


def train_figures(name, variant, cfg, weights, result):
    """{kind: PNG}: the lecture seed's activations at init, update:data ratios over training,
    gradient norms with dead and distinct units, and every seed's loss curve."""
    seed = weights.seeds[0]
    activation = variant.activation
    z, h = result.init_z[0], result.init_h[0]
    inactive = activation.inactive(z, h)
    title = f"{name} at initialisation (seed {seed}, first batch)"
    figures = {"init": init_figure(z, h, inactive, activation, title, variant_color(name))}
    steps = ratio_steps(cfg)
    figures["update_ratio"] = update_ratio_figure(
        steps,
        dict(zip(MATRICES, result.update_ratio[0].T.tolist())),
        f"{name}: update:data ratio, std(θ after - θ before) / std(θ after)\nseed {seed}",
    )
    units, norms = unit_steps(cfg), "gradient norm of each tensor"
    dead = "hidden units off on every training context"
    distinct = "distinct hidden units (W1 column, b1), embedding dimensions (C column), W1 rows"
    grads = dict(zip(weights.params, result.grad_norm[0].T.tolist()))
    off = {"input <= 0 (a ReLU's are dead)": result.negative_units[0].tolist()}
    if activation.inactive_rule:
        off[f"inactive: {activation.inactive_rule}"] = result.dead_units[0].tolist()
    figures["units"] = series_figure(
        {
            norms: (steps, grads),
            dead: (units, off),
            distinct: (
                units,
                {
                    "hidden units": result.distinct_units[0].tolist(),
                    "embedding dims": result.distinct_dims[0].tolist(),
                    "W1 rows": result.distinct_w1_rows[0].tolist(),
                },
            ),
        },
        f"{name}: gradients and hidden units over training (seed {seed})",
        symlog=(norms,),
        counts=(dead, distinct),
    )
    log10_curves = curve(result.losses.log10(), cfg.curve_every)
    figures["seeds"] = loss_curve_figure(
        {f"seed {s}": c for s, c in zip(weights.seeds, log10_curves.tolist())},
        list(range(0, cfg.steps, cfg.curve_every)),
        f"{name}: log10 loss, mean per {cfg.curve_every} steps",
    )
    return figures
