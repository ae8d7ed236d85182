"""Stage report: reports/comparison.md, the lecture's table and the one beyond it, the
instruments, and a section answering each of the exercises' questions; every variant's loss
curve in one long CSV for `dvc plots show`, and their overlay.

It reads every variant's and deep config's files under the metrics folder by the names their
stages give them in dvc.yaml (tests/test_records.py holds the two together).
"""

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
    study = sections.Study(
        params,
        {n: metrics[f"{n}.json"] for n in [*params.variants, "calibrate", "fold"]},
        {n: metrics[f"deep/{n}.json"] for n in params.deep},
        expected,
        str(Path(samples).relative_to(report)),
        str(figure.parent.relative_to(report)),
    )
    curves = {n: metrics[f"curves/{n}.csv"] for n in params.variants}
    column = next(iter(curves.values())).columns.index("log10_loss")
    log10 = {n: [row[column] for row in table.rows] for n, table in curves.items()}
    steps = [row[0] for row in next(iter(curves.values())).rows]
    seed, every = params.train.seeds[0], params.train.curve_every
    overlay = overlay_figure(
        overlay_panels(params, log10),
        steps,
        f"log10 loss, mean per {every} steps, seed {seed}",
    )
    long = ["variant,step,log10_loss"]
    long += [
        f"{n},{step},{value!r}" for n, values in log10.items() for step, value in zip(steps, values)
    ]
    return {
        "comparison": sections.comparison(study, figure.name),
        "figure": overlay,
        "curves": "\n".join(long) + "\n",
    }


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
