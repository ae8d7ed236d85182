"""Significance across seeds, drift checks against the lecture's numbers, the report tables."""

import math
import statistics

import pandas as pd
from scipy import stats

SIGNIFICANCE = 0.05


def welch_p(before, after):
    """One-sided Welch's t-test p-value that `after` has a lower mean than `before`."""
    if len(before) < 2 or len(after) < 2:
        return math.nan
    return float(stats.ttest_ind(after, before, equal_var=False, alternative="less").pvalue)


def drift(expected, metrics):
    """One row per checked number: {row, metric, expected, measured, diff, tol, ok}.

    `expected` maps row -> metric -> {value, tol}; entries with tol None are not checked.
    `metrics` maps row -> the row's metrics dict (None if its file is missing).
    """
    rows = []
    for row, entries in expected.items():
        for metric, spec in entries.items():
            if spec.get("tol") is None:
                continue
            measured = (metrics.get(row) or {}).get(metric)
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


def _mean_sd(values):
    if len(values) < 2:
        return f"{values[0]:.4f}"
    return f"{statistics.fmean(values):.4f} ± {statistics.stdev(values):.4f}"


def comparison_table(rows, expected):
    """The report table as a DataFrame.

    `rows` is a list of (name, metrics) in display order; metrics has top-level train_loss,
    val_loss, optional init_loss, and per-seed values under "seeds".
    """
    checks = {(c["row"], c["metric"]): c["ok"] for c in drift(expected, dict(rows))}
    table, prev = [], None
    for name, m in rows:
        seeds = list(m["seeds"].values())
        val = [s["val_loss"] for s in seeds]
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
                f"train mean ± sd (n={len(seeds)})": _mean_sd([s["train_loss"] for s in seeds]),
                f"val mean ± sd (n={len(seeds)})": _mean_sd(val),
                "beats noise": ""
                if math.isnan(p)
                else f"{'yes' if p < SIGNIFICANCE else 'no'} (p={p:.3f})",
            }
        )
        prev = (m["val_loss"], val)
    return pd.DataFrame(table)


def instruments_table(rows):
    """Per variant: the loss and saturation at init, and how fast each weight moves."""
    table = []
    for name, m in rows:
        ud = m["log10_update_ratio_first_1000_steps"]
        table.append(
            {
                "variant": name,
                "init loss": f"{m['init_loss']:.4f}",
                "ideal": f"{m['init_ideal_loss']:.4f}",
                "saturated at init": f"{m['init_saturated_fraction']:.1%}",
                "dead neurons": m["init_dead_neurons"],
                **{f"log10 update:data {k}": f"{v:.2f}" for k, v in ud.items()},
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
    return pd.DataFrame(table).to_markdown(index=False)
