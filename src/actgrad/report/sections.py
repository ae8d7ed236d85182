"""The sections of reports/comparison.md, one function each, from the stages' metrics.

Every section takes a `Study` (the params and every stage's metrics, as the stages wrote them)
and returns markdown, or None where params.yaml leaves the section out. The words come from
answers.py and the tables from report.py.
"""

import math
from dataclasses import dataclass, field

import pandas as pd

from ..stats import mean_sd
from . import answers
from .tables import (
    SIGNIFICANCE,
    beyond_table,
    comparison_table,
    comparisons,
    conditioning_table,
    deep_lesson_table,
    deep_table,
    differences,
    drift,
    instruments_table,
    optimizer_table,
    seed_values,
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
    demos: dict | None = None  # metrics/demos.json
    series: dict = field(default_factory=dict)  # {variant: its series CSV, a files.Table}
    curves: dict = field(default_factory=dict)  # {variant: (steps, log10 losses)}, as drawn


def table(frame):
    return frame.to_markdown(index=False, disable_numparse=True)


def figures_line(names, kind, folder):
    return " ".join(f"![{n} {kind}]({folder}/{n}_{kind}.png)" for n in names)


def deep_figures(names, kinds, folder):
    return " ".join(f"![{n} {k}]({folder}/deep/{n}_{k}.png)" for n in names for k in kinds)


def column(table, name):
    """The finite values of one column of a CSV's Table."""
    k = table.columns.index(name)
    return [row[k] for row in table.rows if math.isfinite(row[k])]


def steps_of(params, name):
    return params.train_of(name).steps


def deep_rows(study, names):
    """(name, metrics, config with its optimizer) of deep configs."""
    return [(n, study.deep[n], study.params.deep_config(n)) for n in names]


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
`Δ val` is the change from the row above; `lecture val` is the lecture's published number, and
`within tol` names the losses of the row that `expected.yaml` checks against the lecture's
(first seed) and says whether ours are within their tolerances{unchecked(study.expected, rows)}.
`beats noise`: one-sided Welch's t-test that the row's per-seed val losses have a lower mean
than the row above's, at p < {SIGNIFICANCE}.

{table(comparison_table(rows, study.expected))}

![loss curves]({study.figures}/{overlay})

{hockey_stick(study)}"""


def unchecked(expected, rows):
    """ "; `baseline`'s val loss is shown, not checked": the lecture's numbers without a
    tolerance."""
    shown = [
        f"`{name}`'s {metric.replace('_', ' ')}"
        for name, _ in rows
        for metric, spec in expected.get(name, {}).items()
        if spec.get("tol") is None
    ]
    return f" ({', '.join(shown)}: shown, not checked)" if shown else ""


def hockey_stick(study):
    lecture = study.params.report.lecture
    if len(lecture) < 2 or not all(n in study.curves for n in lecture[:2]):
        return ""
    return answers.hockey_stick(*lecture[:2], study.curves, study.params.train.curve_every)


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
    params = study.params
    m, seeds = study.metrics["calibrate"], params.train.seeds
    names = params.report.running_momentum
    momentum = ""
    if names:
        rows = [(n, study.metrics[n], params.variant(n).norm.momentum) for n in names]
        momentum = f"""

{answers.running_momentum(rows, params.train.batch_size)}

{figures_line(names, "update_ratio", study.figures)}"""
    return f"""## BatchNorm: running vs calibrated statistics

`{params.calibrate.variant}`'s running statistics against the ones measured once over the whole
training set. {answers.calibration(m, seeds)}

![BatchNorm calibration]({study.figures}/bn_calibration.png){momentum}"""


def init_loss(study):
    if not study.demos:
        return None
    demos, seed = study.params.demos, study.params.train.seeds[0]
    return f"""## The loss at init (the lecture's first fix)

{answers.init_loss(study.demos, demos.variant, seed, demos.confident)}

![the loss at init]({study.figures}/demo_init_loss.png)"""


def weight_scale(study):
    if not study.demos:
        return None
    return f"""## Why the weights are scaled: `x @ w`

{answers.weight_scale(study.demos["x_w_std"], study.params.demos.x_w)}

![x @ w]({study.figures}/demo_weight_scale.png)"""


def dead_relus(study):
    params, metrics = study.params, study.metrics
    names = params.report.dead_relus
    if not names:
        return None
    rows = [(n, metrics[n], params.variant(n), steps_of(params, n)) for n in names]
    others = [
        (n, metrics[n], params.variant(n))
        for n, v in params.variants.items()
        if v.activation.name == "relu" and n not in names
    ]
    table_rows = [
        {
            "variant": n,
            "activation": v.activation.name,
            "steps": f"{steps:,}",
            "input ≤ 0 everywhere: init": answers.seeds_range(m, "negative_units_init", ".0f"),
            "final": answers.seeds_range(m, "negative_units_final", ".0f"),
            "dead (its rule): final": ""
            if None in seed_values(m, "dead_units_final")
            else answers.seeds_range(m, "dead_units_final", ".0f"),
            f"val mean ± sd (n={len(m['seeds'])})": mean_sd(seed_values(m, "val_loss")),
        }
        for n, m, v, steps in rows
    ]
    return f"""## ReLUs that die

A unit whose input is ≤ 0 on every context of the training split (counted every
{params.train.units_every:,} steps, and at the end; over the seeds):

{answers.dead_relus(rows, others, params.train.n_hidden)}

{table(pd.DataFrame(table_rows))}

{figures_line([*names, *(n for n, _, _ in others)], "units", study.figures)}"""


def kaiming_modes(study):
    params, metrics = study.params, study.metrics
    names = params.report.kaiming_modes
    if not names:
        return None
    vocab = round(math.exp(metrics[names[0]]["init_ideal_loss"]))
    fan_in = params.split.block_size * params.train.n_embd
    fans = {"W1": (fan_in, params.train.n_hidden), "W2": (params.train.n_hidden, vocab)}
    rows = [(n, metrics[n], params.variant(n)) for n in names]
    return f"""## Kaiming's other half: fan_out, and PyTorch's default

{answers.kaiming_modes(rows, fans)}

{figures_line(names, "init", study.figures)}

{figures_line(names, "update_ratio", study.figures)}"""


def batchnorm_side_effects(study):
    params, metrics, report = study.params, study.metrics, study.params.report
    n_layers = params.deep_train.n_layers
    parts = []
    if report.bias_before_batchnorm:
        bn, b1 = report.bias_before_batchnorm
        series = study.series[b1]
        norms = {t: column(series, f"grad_norm_{t}") for t in ("b1", "W1")}
        parts += [
            answers.bias_before_batchnorm([(bn, metrics[bn]), (b1, metrics[b1])], norms),
            figures_line([b1], "update_ratio", study.figures),
        ]
    if report.train_val_gap:
        parts.append(answers.train_val_gap([(n, metrics[n]) for n in report.train_val_gap]))
    if report.deep_batchnorm_gains:
        rows = deep_rows(study, report.deep_batchnorm_gains)
        parts += [
            answers.deep_gains(rows, n_layers),
            table(deep_lesson_table(rows, n_layers)),
            deep_figures(
                report.deep_batchnorm_gains, ("activations", "update_ratio"), study.figures
            ),
        ]
    if report.deep_batchnorm_lr:
        rows = deep_rows(study, report.deep_batchnorm_lr)
        fan_ins = (params.split.block_size * params.deep_train.n_embd, params.deep_train.n_hidden)
        parts += [
            answers.deep_lr(rows, n_layers, fan_ins),
            table(deep_lesson_table(rows, n_layers)),
            deep_figures(report.deep_batchnorm_lr, ("activations", "update_ratio"), study.figures),
        ]
    if not parts:
        return None
    body = "\n\n".join(parts)
    return f"""## BatchNorm's side effects

{body}"""


def deep_miscalibrated(study):
    names = study.params.report.deep_miscalibrated
    if not names:
        return None
    n_layers = study.params.deep_train.n_layers
    rows = deep_rows(study, names)
    return f"""## The deep network miscalibrated

The lecture's two mistakes on its deep tanh stack, over the seeds: a learning rate far too low,
and weights drawn without the 1/√fan_in.

{answers.deep_miscalibrated(rows, n_layers)}

{table(deep_lesson_table(rows, n_layers))}

{deep_figures(names, ("activations", "update_ratio"), study.figures)}"""


def zero_init(study):
    name = study.params.report.zero_init
    if not name:
        return None
    return f"""## 1. Zero init (the lecture's exercise E01)

{answers.zero_init(name, study.metrics[name], study.params.variants[name])}

![{name} units]({study.figures}/{name}_units.png)"""


def symmetry(study):
    params, metrics = study.params, study.metrics
    names, embedding = params.report.symmetry, params.report.embedding_symmetry
    if not names and not embedding and not study.demos:
        return None
    parts = []
    if names:
        constant, broken = names
        differs = ", ".join(differences(params.variant(constant), params.variant(broken)))
        parts += [
            "Exercise 1 asks for symmetries other than the permutation of the hidden units. "
            "First the one that constant init keeps: "
            + answers.symmetry(constant, metrics[constant], broken, metrics[broken], differs),
            figures_line(names, "units", study.figures),
        ]
    if embedding:
        constant, broken = embedding
        steps = {n: steps_of(params, n) for n in embedding}
        parts += [
            answers.embedding_symmetry(
                constant,
                metrics[constant],
                broken,
                metrics[broken],
                params.train.n_embd,
                params.split.block_size,
                steps,
            ),
            figures_line(embedding, "units", study.figures),
        ]
    if study.demos:
        vocab = round(math.exp(study.demos["ideal_init_loss"]))
        parts += [
            answers.softmax_regression(
                study.demos["softmax_regression"], vocab, params.demos.softmax_regression
            ),
            f"![softmax regression]({study.figures}/demo_softmax_regression.png)",
        ]
    body = "\n\n".join(parts)
    return f"""## 2. Symmetry (d2l 5.4, exercises 1 and 2)

{body}"""


def fold(study):
    params = study.params
    return f"""## 3. BatchNorm folded into the Linear before it (the lecture's exercise E02)

{answers.fold(params.calibrate.variant, study.metrics["fold"], params.train.n_hidden)}"""


def lars(study):
    compare = study.params.report.deep_compare
    if not compare:
        return None
    triples = [deep_rows(study, [n, *others]) for n, others in compare.items()]
    rows = [row for triple in triples for row in triple]
    names = [n for n, _, _ in rows]
    n_layers = study.params.deep_train.n_layers
    return f"""## 4. LARS where SGD diverges or spreads the steps (d2l 5.4, exercise 4)

Each LARS config against the same stack with SGD and with SGD's momentum alone (LARS's own
momentum, without its layer-wise trust ratio), over the {len(study.params.deep_train.seeds)}
seeds of `deep_train.seeds`.

{answers.lars(triples)}

{table(deep_lesson_table(rows, n_layers))}

{deep_figures(names, ("update_ratio", "activations"), study.figures)}"""


def conditioning(study):
    params, compare = study.params, study.params.report.deep_compare
    # the LARS configs start as their SGD stacks do: compare the others
    plain_deep = [(n, m) for n, m in study.deep.items() if n not in compare]
    tanh_gains = {}  # the plain tanh stacks scaled by 1/√fan_in, one per gain
    for n, c in params.deep.items():
        plain = c.activation.name == "tanh" and not c.batchnorm and c.fan_in_scaling
        if plain and n not in compare and c.gain not in tanh_gains.values():
            tanh_gains[n] = c.gain
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
{train.bn_momentum}, eps {train.bn_eps:g}), as the notebook does, on each of the seeds
{list(train.seeds)} (the first is the notebook's).
Train and val loss of every config, at the first seed and over the seeds, and each weight's log10
update:data at the last step of the first seed:

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

At the first seed, {study.params.deep_train.seeds[0]} (the notebook's). Every cell reads "at
init → after the last step" for the hidden layer's output (after its
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
        init_loss(study),
        weight_scale(study),
        dead_relus(study),
        kaiming_modes(study),
        calibration(study),
        batchnorm_side_effects(study),
        deep_miscalibrated(study),
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
