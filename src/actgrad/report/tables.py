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


def comparison_table(rows, expected):
    """The lecture's table: each row against the row above, and against the lecture's numbers.

    `rows` is a list of (name, metrics) in display order; metrics has top-level train_loss,
    val_loss, optional init_loss, and per-seed values under "seeds".
    """
    checks = {(c["row"], c["metric"]): c["ok"] for c in drift(expected, dict(rows))}
    table, prev = [], None
    for name, m in rows:
        val = seed_values(m, "val_loss")
        ok = [v for (row, _), v in checks.items() if row == name]
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
                "within tol": ("yes" if all(ok) else "NO") if ok else "",
                f"train mean ± sd (n={len(val)})": mean_sd(seed_values(m, "train_loss")),
                f"val mean ± sd (n={len(val)})": mean_sd(val),
                "beats noise": ""
                if math.isnan(p)
                else f"{'yes' if p < SIGNIFICANCE else 'no'} (p={p:.3f})",
            }
        )
        prev = (m["val_loss"], val)
    return pd.DataFrame(table)


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
    for name in (n for n in variants if n not in lecture):
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
    """{panel title: {variant: log10 loss per block}}: the lecture's variants, the others that
    train, and those that end more than STUCK above the best, in a panel of their own so that
    they squash no other curve."""
    best = min(values[-1] for values in curves.values())
    stuck = [n for n, values in curves.items() if values[-1] > best + STUCK]
    lecture = [n for n in params.report.lecture if n in curves]
    panels = {
        "the lecture's variants": lecture,
        "beyond the lecture": [n for n in curves if n not in lecture and n not in stuck],
        f"stuck: ending more than {STUCK} above the best log10 loss": [
            n for n in stuck if n not in lecture
        ],
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
        p = welch_p(other_val, val, alternative="two-sided")
        verdict = "no difference" if not p < SIGNIFICANCE else ("better" if delta < 0 else "worse")
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
    """Deep configs side by side: optimizer, outcome, and each weight's last log10 update:data."""
    table = []
    for name, m in rows:
        ratios = {k: "" if v is None else f"{v:.2f}" for k, v in m["update_ratio_log10"].items()}
        table.append(
            {
                "config": name,
                "optimizer": m["optimizer"],
                "train / val": deep_outcome(m),
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
