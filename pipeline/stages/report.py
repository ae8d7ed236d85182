"""Stage report: reports/comparison.md, the lecture's table and the one beyond it, the
instruments, and a section answering each of the exercises' questions; every variant's loss
curve in one long CSV for `dvc plots show`, and their overlay.

It reads every variant's and deep config's files under the metrics folder by the names their
stages give them in dvc.yaml (tests/test_records.py holds the two together).
"""

import math
from pathlib import Path

from actgrad.plots import overlay_figure
from actgrad.recipes import read_params
from actgrad.report import sections
from actgrad.report.tables import overlay_panels

from ..files import Link, Png, Text, Tree, Yaml
from ..runner import Stage
from ..tracking import registry
from ..tracking.records import Plan, log_files


def compute(params, metrics, expected, samples, paths):
    report, figure = Path(paths["comparison"]).parent, Path(paths["figure"])
    seed, every = params.train.seeds[0], params.train.curve_every
    curves = {
        n: hockey_stick(metrics[f"curves/{n}.csv"], metrics[f"{n}.json"], every)
        for n in params.variants
    }
    study = sections.Study(
        params,
        {n: metrics[f"{n}.json"] for n in [*params.variants, "calibrate", "fold"]},
        {n: metrics[f"deep/{n}.json"] for n in params.deep},
        expected,
        str(Path(samples).relative_to(report)),
        str(figure.parent.relative_to(report)),
        demos=metrics["demos.json"],
        series={n: metrics[f"series/{n}.csv"] for n in params.variants},
        curves=curves,
    )
    overlay = overlay_figure(
        overlay_panels(params, curves),
        f"log10 loss at step 0, then its mean per {every} steps, seed {seed}",
    )
    long = ["variant,step,log10_loss"]
    long += [f"{n},{step},{value!r}" for n, pairs in curves.items() for step, value in zip(*pairs)]
    return {
        "comparison": sections.comparison(study, figure.name),
        "figure": overlay,
        "curves": "\n".join(long) + "\n",
    }


def hockey_stick(curve, metrics, every):
    """(steps, log10 losses) of the lecture seed: its loss at step 0, then each block's mean
    at the block's middle step, so that the first drop shows."""
    column = curve.columns.index("log10_loss")
    steps = [0] + [row[0] + every // 2 for row in curve.rows]
    return steps, [math.log10(metrics["init_loss"])] + [row[column] for row in curve.rows]


def runs(params, key):
    return Plan(name="report")


def log_runs(client, runs, made):
    """The report's files, and every variant's model registered."""
    log_files(client, runs.top, [made.paths[role] for role in STAGE.outputs])
    exp_id = client.get_run(runs.top).info.experiment_id
    registry.register(client, exp_id, made.params, made.paths["metrics"])


STAGE = Stage(
    name="report",
    params=read_params,
    compute=compute,
    inputs={"metrics": Tree, "expected": Yaml, "samples": Link},
    outputs={"comparison": Text, "figure": Png, "curves": Text},
    runs=runs,
    log_runs=log_runs,
    describe=lambda made: (
        f"{len(made.params.variants)} variants, {len(made.params.deep)} deep configs"
    ),
    summary=lambda made: (
        f"wrote {made.paths['comparison']}, {made.paths['curves']} and {made.paths['figure']}"
    ),
)

if __name__ == "__main__":
    STAGE.main()
