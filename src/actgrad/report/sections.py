"""The sections of reports/comparison.md, one function each, from the stages' metrics.

Every section takes a `Study` (the params and every stage's metrics, as the stages wrote them)
and returns markdown, or None where params.yaml leaves the section out. The words come from
answers.py and the tables from report.py.
"""

from dataclasses import dataclass

import pandas as pd

from . import answers
from .tables import (
    SIGNIFICANCE,
    beyond_table,
    comparison_table,
    comparisons,
    conditioning_table,
    deep_table,
    drift,
    instruments_table,
    optimizer_table,
)

DEEP_LAYER_FIGURES = ("activations", "gradients", "weight_grads", "update_ratio")


@dataclass
class Study:
    params: object  # recipes.Params
    metrics: dict  # {variant, "calibrate", "fold": metrics JSON}
    deep: dict  # {deep config: metrics JSON}
    expected: dict  # expected.yaml
    samples: str  # the folder of the sampled names, relative to the report
    figures: str  # the folder of the figures, relative to the report


def table(frame):
    return frame.to_markdown(index=False, disable_numparse=True)


def figures_line(names, kind, folder):
    return " ".join(f"![{n} {kind}]({folder}/{n}_{kind}.png)" for n in names)


def drift_table(checks):
    rows = [
        {
            "number": f"{c['row'].removeprefix('deep/')}: {c['metric']}",
            "notebook": f"{c['expected']:.6g}",
            "ours": "missing" if c["measured"] is None else f"{c['measured']:.6g}",
            "tol": f"{c['tol']:g}",
            "ok": "yes" if c["ok"] else "NO",
        }
        for c in checks
    ]
    return pd.DataFrame(rows)


def lecture(study, overlay):
    params, metrics = study.params, study.metrics
    seeds = params.train.seeds
    rows = [(n, metrics[n]) for n in params.report.lecture] + [("calibrate", metrics["calibrate"])]
    return f"""# Activations, gradients and BatchNorm: train/val loss per init recipe

Seed {seeds[0]} (the lecture's) for the single-seed columns; mean ± sd over seeds {list(seeds)}.
`calibrate` evaluates the `{params.calibrate.variant}` model with BatchNorm statistics measured
once over the whole training set instead of the running ones.
`Δ val` is the change from the row above; `lecture val` is the lecture's published number and
`within tol` says whether ours matches it within the tolerance in `expected.yaml`.
`beats noise`: one-sided Welch's t-test that the row's per-seed val losses have a lower mean
than the row above's, at p < {SIGNIFICANCE}.

{table(comparison_table(rows, study.expected))}

![loss curves]({study.figures}/{overlay})"""


def beyond(study):
    params, metrics = study.params, study.metrics
    pairs = comparisons(params)
    if not pairs:
        return None
    rows = [(n, metrics[n]) for n in pairs]
    compare = {n: other for n, (other, _) in pairs.items()}
    defaults = "".join(
        f"\n\n`{n}` has no `report.compare` entry, so it is set against `{other}`, the variant "
        f"it differs from least (in {why})."
        for n, (other, why) in pairs.items()
        if why
    )
    return f"""## Beyond the lecture

Each variant against the one it changes (`report.compare` in params.yaml; without an entry, the
variant it differs from least): mean ± sd over the {len(params.train.seeds)} seeds, the change
in mean val loss, and a two-sided Welch's t-test on the per-seed val losses (p <
{SIGNIFICANCE}: better or worse; otherwise no difference beyond the seeds' noise).

{table(beyond_table(rows, metrics, compare))}{defaults}"""


def instruments(study):
    params, metrics, figures = study.params, study.metrics, study.figures
    variants = [(n, metrics[n]) for n in params.variants]
    return f"""## The instruments, at seed {params.train.seeds[0]}

At initialisation, on the first minibatch: the loss against the ideal -log(1/27) =
{metrics[params.report.lecture[0]]["init_ideal_loss"]:.4f}, the share of hidden units that are
inactive (each activation's own rule, `inactive when`: they pass almost no gradient) and the
units inactive for every example of the batch. During training, every
{params.train.units_every:,} steps: the units inactive on every context of the training split
(dead), the most at any count and at the end, and the distinct hidden units (different W1
column and b1). The update:data ratio is log10 std(θ after − θ before) / std(θ after), the
real update of whatever optimizer, averaged over the first 1,000 steps (the lecture's rule of
thumb: about -3); n/a when θ never moved, or its entries are all equal (std 0), as zero and
constant init make them.

{table(instruments_table(variants))}

{figures_line(params.variants, "init", figures)}

{figures_line(params.variants, "update_ratio", figures)}

{figures_line(params.variants, "units", figures)}"""


def calibration(study):
    m, seeds = study.metrics["calibrate"], study.params.train.seeds
    return f"""## BatchNorm: running vs calibrated statistics

Largest gap over the {len(m["seeds"])} seeds' neurons: mean
{m["mean"]["mean_max_abs_diff"]:.4f} (absolute), std
{m["mean"]["std_max_rel_diff"]:.2%} (relative); val loss with running
statistics {m["running_val_loss"]:.4f}, calibrated
{m["val_loss"]:.4f} (seed {seeds[0]}).

![BatchNorm calibration]({study.figures}/bn_calibration.png)"""


def zero_init(study):
    name = study.params.report.zero_init
    if not name:
        return None
    return f"""## 1. Zero init (the lecture's exercise E01)

{answers.zero_init(name, study.metrics[name], study.params.variants[name])}

![{name} units]({study.figures}/{name}_units.png)"""


def symmetry(study):
    names = study.params.report.symmetry
    if not names:
        return None
    constant, broken = names
    metrics = study.metrics
    return f"""## 2. Symmetry (d2l 5.4, exercises 1 and 2)

{answers.symmetry(constant, metrics[constant], broken, metrics[broken])}

{figures_line(names, "units", study.figures)}"""


def fold(study):
    params = study.params
    return f"""## 3. BatchNorm folded into the Linear before it (the lecture's exercise E02)

{answers.fold(params.calibrate.variant, study.metrics["fold"], params.train.n_hidden)}"""


def lars(study):
    compare, deep = study.params.report.deep_compare, study.deep
    if not compare:
        return None
    pairs = [((n, deep[n]), (other, deep[other])) for n, other in compare.items()]
    rows = [row for pair in pairs for row in pair]
    figures = " ".join(
        f"![{n} update:data]({study.figures}/deep/{n}_update_ratio.png)" for n, _ in rows
    )
    return f"""## 4. LARS where SGD diverges or spreads the steps (d2l 5.4, exercise 4)

{answers.lars(pairs)}

{table(optimizer_table(rows))}

{figures}"""


def conditioning(study):
    params, compare = study.params, study.params.report.deep_compare
    # the configs that differ only in their optimizer start alike: compare the others
    plain_deep = [(n, m) for n, m in study.deep.items() if n not in compare]
    tanh_gains = {
        n: c.gain
        for n, c in params.deep.items()
        if c.activation.name == "tanh" and not c.batchnorm and n not in compare
    }
    return f"""## 5. Conditioning (d2l 5.4, exercise 3)

For every deep config, at init and after the last step: the singular values of the Jacobian
of the hidden stack's output with respect to its input (one per example of a fixed batch of
{params.deep_train.jacobian_examples}, BatchNorm with that batch's statistics held fixed) and
of each weight matrix.

{answers.conditioning(plain_deep, tanh_gains)}

{table(conditioning_table(list(study.deep.items())))}

{figures_line(params.deep, "spectrum", f"{study.figures}/deep")}"""


def notebook(study):
    train = study.params.deep_train
    checks = drift(study.expected, {f"deep/{n}": m for n, m in study.deep.items()})
    notebook_checks = [c for c in checks if c["row"].startswith("deep/")]
    return f"""## 6. The deep network as the notebook runs it

{train.n_layers} hidden layers of {train.n_hidden}, trained for
{train.steps:,} steps (the notebook's 1,001: it breaks after the update of step
i = 1000), then evaluated with BatchNorm's running statistics (momentum
{train.bn_momentum}, eps {train.bn_eps:g}), as the notebook does.
Train and val loss of every config, and each weight's log10 update:data at the last step:

{table(optimizer_table(list(study.deep.items())))}

Against the numbers the notebook prints for its stored run (`expected.yaml`, checked by
`make check`):

{table(drift_table(notebook_checks))}"""


def samples(study):
    train = study.params.train
    links = ", ".join(f"[{n}]({study.samples}/{n}.txt)" for n in study.params.variants)
    return f"""## Names sampled from each model

{train.samples} names from the model of seed {train.seeds[0]}, with the sample seed
{train.sample_seed}: {links}. `actgrad sample <variant>` prints the same names, and more with
other seeds."""


def deep_layers(study):
    deep_figures = "\n\n".join(
        " ".join(f"![{n} {k}]({study.figures}/deep/{n}_{k}.png)" for k in DEEP_LAYER_FIGURES)
        for n in study.params.deep
    )
    return f"""## The deep network's layers

Every cell reads "at init → after the last step" for the hidden layer's output (after its
activation): saturated means |t| > 0.97 (tanh only), grad is the gradient of the layer's
output, and weight grad:data is std(grad) / std(weight) of the Linear feeding the layer.

{table(deep_table(list(study.deep.items())))}

{deep_figures}"""


def comparison(study, overlay):
    """The whole report: every section params.yaml asks for, in order."""
    sections = [
        lecture(study, overlay),
        beyond(study),
        instruments(study),
        calibration(study),
        zero_init(study),
        symmetry(study),
        fold(study),
        lars(study),
        conditioning(study),
        notebook(study),
        samples(study),
        deep_layers(study),
    ]
    return "\n\n".join(s for s in sections if s is not None) + "\n"
