"""Significance across seeds, drift checks against the lecture's numbers, the report tables.

Every table is a pure function of metrics dicts (as the stages write them) returning a DataFrame.
"""

import math
import statistics

import pandas as pd
from scipy import stats

from ..stats import mean_sd

SIGNIFICANCE = 0.05


def welch_p(before, after, alternative="less"):
    """Welch's t-test p-value that `after` has a lower mean than `before` ("less"), or a
    different one ("two-sided")."""
    if len(before) < 2 or len(after) < 2:
        return math.nan
    return float(stats.ttest_ind(after, before, equal_var=False, alternative=alternative).pvalue)


def lookup(metrics, path):
    """metrics["a"]["b"] for the dotted path "a.b"; None if any part is missing."""
    for part in path.split("."):
        if not isinstance(metrics, dict) or part not in metrics:
            return None
        metrics = metrics[part]
    return metrics


def drift(expected, metrics):
    """One row per checked number: {row, metric, expected, measured, diff, tol, ok}.

    `expected` maps row -> metric (a dotted path into the row's JSON) -> {value, tol}; entries
    with tol None are not checked. `metrics` maps row -> the row's metrics dict (None if its
    file is missing).
    """
    rows = []
    for row, entries in expected.items():
        for metric, spec in entries.items():
            if spec.get("tol") is None:
                continue
            measured = lookup(metrics.get(row) or {}, metric)
            diff = None if measured is None else measured - spec["value"]
            ok = diff is not None and abs(diff) <= spec["tol"]
            rows.append(
                dict(
                    row=row,
                    metric=metric,
                    expected=spec["value"],
                    measured=measured,
                    diff=diff,
                    tol=spec["tol"],
                    ok=ok,
                )
            )
    return rows


def seed_values(metrics, key):
    """A metric's value at every seed, in seed order."""
    return [seed[key] for seed in metrics["seeds"].values()]


def span(values, fmt=".4f"):
    """The range of `values` as printed, "2.1 to 2.2", or the one value where both ends print
    alike; "" where there is none."""
    if not values:
        return ""
    low, high = format(min(values), fmt), format(max(values), fmt)
    return low if low == high else f"{low} to {high}"


# --- the deep network over its seeds ----------------------------------------------------------


def trained_seeds(m):
    """The per-seed numbers of a deep config's seeds that did not diverge."""
    return [s for s in m["seeds"].values() if not s["diverged_at_step"]]


def diverged_steps(m):
    """The step at which each seed of a deep config that diverged did."""
    return [s["diverged_at_step"] for s in m["seeds"].values() if s["diverged_at_step"]]


def hidden_weights(m, n_layers):
    """The names of the hidden Linears' weights (W1 .. Wn) among a deep config's ratios."""
    return [k for k in m["update_ratio_log10"] if k.startswith("W")][:n_layers]


def seed_ratios(m, keys):
    """Every finite last log10 update:data of the weights `keys`, over the trained seeds."""
    ratios = [s["update_ratio_log10"][k] for s in trained_seeds(m) for k in keys]
    return [r for r in ratios if r is not None]


def seed_saturation(m):
    """Every hidden layer's saturation (%) after the last step, over the trained seeds; empty
    where the activation has none (not tanh)."""
    return [v for s in trained_seeds(m) for v in s["saturated_pct"].values() if v is not None]


def layer_values(m, moment, key):
    """A statistic of every hidden layer of the first seed, at "init" or "final" (empty where
    it diverged, or where the statistic is not defined)."""
    read = m[moment]
    if not read:
        return []
    return [layer[key] for layer in read["layers"].values() if layer[key] is not None]


def seeds_cell(m, key):
    """A deep config's loss over its seeds: mean ± sd, "diverged (step 6)" where every seed
    diverged, and how many did where some did."""
    done, steps = [s[key] for s in trained_seeds(m)], diverged_steps(m)
    if not done:
        return f"diverged (step {span(steps, 'd')})"
    if steps:
        return f"{mean_sd(done)} ({len(steps)} of {len(m['seeds'])} diverged)"
    return mean_sd(done)


def optimizer_words(opt):
    """ "lars lr 0.1, momentum 0.9, trust 0.01": an optimizer and the hyperparameters that
    tell it apart."""
    values = opt.model_dump()
    keys = [k for k in ("momentum", "trust") if values.get(k) is not None]
    return ", ".join([f"{opt.name} lr {opt.lr:g}", *(f"{k} {values[k]:g}" for k in keys)])


def recipe_words(cfg):
    """A deep config in a few words: "tanh, gain 1.67, BatchNorm, sgd lr 0.1"."""
    words = [cfg.activation.name, f"gain {cfg.gain:.3g}"]
    words += ["BatchNorm"] if cfg.batchnorm else []
    words += [] if cfg.fan_in_scaling else ["no 1/√fan_in"]
    return ", ".join([*words, optimizer_words(cfg.optimizer)])


def deep_lesson_table(rows, n_layers):
    """Deep configs side by side: what each is, its hidden layers' output std at init and after
    the last step (first seed, every layer), their saturation after the last step and the
    hidden weights' last log10 update:data (every layer and trained seed), and the losses over
    the seeds. `rows`: (name, metrics, config with its optimizer)."""
    table = []
    for name, m, cfg in rows:
        final = span(layer_values(m, "final", "act_std"), ".2f") or "diverged"
        n = len(m["seeds"])
        table.append(
            {
                "config": name,
                "recipe": recipe_words(cfg),
                "act std: init → final": f"{span(layer_values(m, 'init', 'act_std'), '.2f')} "
                f"→ {final}",
                "saturated % (final)": span(seed_saturation(m), ".1f"),
                "hidden log10 update:data": span(
                    seed_ratios(m, hidden_weights(m, n_layers)), ".2f"
                ),
                f"train mean ± sd (n={n})": seeds_cell(m, "train_loss"),
                f"val mean ± sd (n={n})": seeds_cell(m, "val_loss"),
            }
        )
    return pd.DataFrame(table)


def comparison_table(rows, expected):
    """The lecture's table: each row against the row above, and against the lecture's numbers.

    `rows` is a list of (name, metrics) in display order; metrics has top-level train_loss,
    val_loss, optional init_loss, and per-seed values under "seeds".
    """
    checks = {(c["row"], c["metric"]): c["ok"] for c in drift(expected, dict(rows))}
    table, prev = [], None
    for name, m in rows:
        val = seed_values(m, "val_loss")
        checked = [(metric, v) for (row, metric), v in checks.items() if row == name]
        published = expected.get(name, {}).get("val_loss", {}).get("value")
        p = welch_p(prev[1], val) if prev else math.nan
        table.append(
            {
                "variant": name,
                "init loss": f"{m['init_loss']:.4f}" if "init_loss" in m else "",
                "train": f"{m['train_loss']:.4f}",
                "val": f"{m['val_loss']:.4f}",
                "Δ val": f"{m['val_loss'] - prev[0]:+.4f}" if prev else "",
                "lecture val": f"{published:.4f}" if published is not None else "",
                "within tol": within_tol(checked),
                f"train mean ± sd (n={len(val)})": mean_sd(seed_values(m, "train_loss")),
                f"val mean ± sd (n={len(val)})": mean_sd(val),
                "beats noise": ""
                if math.isnan(p)
                else f"{'yes' if p < SIGNIFICANCE else 'no'} (p={p:.3f})",
            }
        )
        prev = (m["val_loss"], val)
    return pd.DataFrame(table)


def metric_words(metric):
    """ "running_val_loss" -> "running val": a checked loss in the lecture table's words."""
    return metric.removesuffix("_loss").replace("_", " ")


def within_tol(checked):
    """The `within tol` cell of a row: which of its numbers expected.yaml checks, and whether
    they are within their tolerances ("yes: train, val"; "NO: val; yes: train"); blank where
    none is checked."""
    if not checked:
        return ""
    bad = [metric_words(m) for m, ok in checked if not ok]
    good = [metric_words(m) for m, ok in checked if ok]
    if not bad:
        return f"yes: {', '.join(good)}"
    return f"NO: {', '.join(bad)}" + (f"; yes: {', '.join(good)}" if good else "")


def welch_verdict(before, after):
    """(word, p) of a two-sided Welch's t-test on per-seed values: "lower" or "higher" where
    p < SIGNIFICANCE, else "no difference"; p NaN with fewer than two seeds a side."""
    p = welch_p(before, after, alternative="two-sided")
    if not p < SIGNIFICANCE:
        return "no difference", p
    return ("lower" if statistics.fmean(after) < statistics.fmean(before) else "higher"), p


def differences(a, b):
    """What tells two variants apart: each tensor's init, the activation, norm and optimizer."""
    tensors = dict.fromkeys([*a.tensors, *b.tensors])
    parts = [f"init.{t}" for t in tensors if a.init_of(t) != b.init_of(t)]
    return parts + [
        k for k in ("activation", "norm", "optimizer") if getattr(a, k) != getattr(b, k)
    ]


def comparisons(params):
    """{variant beyond the lecture: (the variant it is set against, None or why that one)}:
    its report.compare entry, or else the variant it differs from least (the first of
    params.yaml among equals), and the parts they differ in."""
    lecture = params.report.lecture
    variants = {name: params.variant(name) for name in params.variants}
    pairs = {}
    for name in (n for n in variants if n not in lecture and not variants[n].steps):
        if name in params.report.compare:
            pairs[name] = (params.report.compare[name], None)
            continue
        others = [n for n in variants if n != name]
        if not others:
            continue
        closest = min(others, key=lambda n: len(differences(variants[name], variants[n])))
        parts = differences(variants[name], variants[closest])
        pairs[name] = (closest, ", ".join(parts) or "nothing: the same recipe")
    return pairs


STUCK = 0.05  # log10: a variant that ends this far above the best (12% in loss) is stuck


def overlay_panels(params, curves):
    """{panel title: {variant: (steps, log10 losses)}}: the lecture's variants, the others that
    train, those that end more than STUCK above the best, in a panel of their own so that they
    squash no other curve, and those that train for steps of their own."""
    own = [n for n in curves if params.variant(n).steps]
    full = {n: values for n, (_, values) in curves.items() if n not in own}
    best = min(values[-1] for values in full.values())
    stuck = [n for n, values in full.items() if values[-1] > best + STUCK]
    lecture = [n for n in params.report.lecture if n in curves]
    panels = {
        "the lecture's variants": lecture,
        "beyond the lecture": [n for n in full if n not in lecture and n not in stuck],
        f"stuck: ending more than {STUCK} above the best log10 loss": [
            n for n in stuck if n not in lecture
        ],
        "the lessons that train for steps of their own": own,
    }
    return {title: {n: curves[n] for n in names} for title, names in panels.items() if names}


def beyond_table(rows, metrics, compare):
    """Each variant beyond the lecture against the one it changes: mean ± sd over the seeds,
    the change in mean val loss, and a two-sided Welch's t-test on the per-seed val losses."""
    table = []
    for name, m in rows:
        other = compare[name]
        val, other_val = seed_values(m, "val_loss"), seed_values(metrics[other], "val_loss")
        delta = statistics.fmean(val) - statistics.fmean(other_val)
        word, p = welch_verdict(other_val, val)
        verdict = {"lower": "better", "higher": "worse"}.get(word, word)
        table.append(
            {
                "variant": name,
                "compared with": other,
                f"train mean ± sd (n={len(val)})": mean_sd(seed_values(m, "train_loss")),
                f"val mean ± sd (n={len(val)})": mean_sd(val),
                "Δ val (means)": f"{delta:+.4f}",
                "Welch's t-test": f"{verdict} (p={p:.3f})",
            }
        )
    return pd.DataFrame(table)


def ratio(value):
    """A log10 update:data ratio; "n/a" where there is none (None in the JSON): a weight that
    never moved, or whose entries are all equal, as zero and constant init make them."""
    return "n/a" if value is None else f"{value:.2f}"


def _count(value):
    return "" if value is None else f"{value:.0f}"


def instruments_table(rows):
    """Per variant, at the lecture seed: the loss and inactive units at init, dead and distinct
    hidden units over training, and how fast each weight moves."""
    table = []
    for name, m in rows:
        ud = m["log10_update_ratio_first_1000_steps"]
        inactive = m["init_inactive_fraction"]
        table.append(
            {
                "variant": name,
                "inactive when": m["inactive_rule"] or "never",
                "init loss": f"{m['init_loss']:.4f}",
                "inactive at init": "" if inactive is None else f"{inactive:.1%}",
                "dead at init (batch)": _count(m["init_dead_units"]),
                "dead (split): most, final": f"{_count(m['dead_units_max'])}, "
                f"{_count(m['dead_units_final'])}".strip(", "),
                "distinct units": _count(m["distinct_units_final"]),
                **{f"log10 update:data {k}": ratio(v) for k, v in ud.items()},
            }
        )
    return pd.DataFrame(table)


def deep_table(rows):
    """Markdown table, one line per hidden layer of each config, each cell "init → final".

    `rows` is a list of (config name, metrics) in display order, metrics being a
    metrics/deep/<config>.json as the deep stage writes it.
    """

    def cell(key, fmt, init, final):
        if init[key] is None:
            return ""
        return f"{init[key]:{fmt}} → {'diverged' if final is None else format(final[key], fmt)}"

    table = []
    for name, metrics in rows:
        for key, init in metrics["init"]["layers"].items():
            final = metrics["final"] and metrics["final"]["layers"][key]
            table.append(
                {
                    "config": name,
                    "layer": init["label"],
                    "act mean": cell("act_mean", "+.3f", init, final),
                    "act std": cell("act_std", ".3f", init, final),
                    "saturated %": cell("saturated_pct", ".2f", init, final),
                    "grad std": cell("grad_std", ".2e", init, final),
                    "weight grad:data": cell("weight_grad_data", ".2e", init, final),
                }
            )
    return pd.DataFrame(table)


def deep_outcome(metrics):
    if metrics["diverged_at_step"]:
        return f"diverged at step {metrics['diverged_at_step']}"
    return f"{metrics['train_loss']:.4f} / {metrics['val_loss']:.4f}"


def optimizer_table(rows):
    """Deep configs side by side: optimizer, the first seed's outcome, train and val over the
    seeds, and each weight's last log10 update:data at the first seed."""
    table = []
    for name, m in rows:
        ratios = {
            k: "" if v is None or m["diverged_at_step"] else f"{v:.2f}"
            for k, v in m["update_ratio_log10"].items()
        }
        n = len(m["seeds"])
        table.append(
            {
                "config": name,
                "optimizer": m["optimizer"],
                "train / val (first seed)": deep_outcome(m),
                f"train mean ± sd (n={n})": seeds_cell(m, "train_loss"),
                f"val mean ± sd (n={n})": seeds_cell(m, "val_loss"),
                **{f"{k}": v for k, v in ratios.items()},
            }
        )
    return pd.DataFrame(table)


def conditioning_table(rows):
    """Per config, at init and after the last step: the spread of the singular values of the
    hidden stack's per-example Jacobians, and the largest ratio among the hidden weights'."""
    table = []
    for name, m in rows:
        for moment in ("init", "final"):
            spectra = m["spectra"][moment]
            if spectra is None:
                table.append({"config": name, "when": moment, "Jacobian σ max": "diverged"})
                continue
            jac = spectra["jacobian"]
            hidden = [w["ratio"] for k, w in spectra["weights"].items() if k != "W1"][:-1]
            table.append(
                {
                    "config": name,
                    "when": moment,
                    "Jacobian σ max": f"{jac['largest']:.3g}",
                    "σ min": f"{jac['smallest']:.3g}",
                    "σ max / σ min": f"{jac['ratio']:.3g}",
                    "mean σ²": f"{jac['mean_square']:.3g}",
                    "hidden weights' σ max / σ min (worst)": f"{max(hidden):.3g}",
                }
            )
    return pd.DataFrame(table)
