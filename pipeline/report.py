"""Stage report: reports/comparison.md, the lecture's table and the one beyond it, the
instruments, and a section answering each of the exercises' questions; every variant's loss
curve in one long CSV for `dvc plots show`, and their overlay.

It reads every variant's and deep config's files under the folders its command names, by the
names their stages give them in dvc.yaml (tests/test_records.py holds the two together).
"""

import csv
from pathlib import Path

import click
import yaml

from actgrad import sections
from actgrad.params import read_params
from actgrad.plots import overlay_figure
from actgrad.report import overlay_panels

from . import records, registry
from .outputs import writing
from .stage import log, run_stage, stage_command
from .tracking import mlflow_client


def record(params, args):
    return records.Record(
        stage="report",
        source="pipeline/report.py",
        name="report",
        outputs={role: Path(args[role]) for role in ("comparison", "figure", "curves")},
        fill=fill,
        inputs={"metrics": Path(args["metrics"])},
    )


def fill(client, runs, record, params):
    """The report's files, and every variant's model registered."""
    records.log_files(client, runs.top, record.outputs.values())
    exp_id = client.get_run(runs.top).info.experiment_id
    registry.register(client, exp_id, params, record.inputs["metrics"])


def read_study(params, paths):
    """Every stage's metrics and expected.yaml, as sections.Study."""
    metrics_dir = Path(paths["metrics"])
    names = [*params.variants, "calibrate", "fold"]
    metrics = {n: records.read_json(metrics_dir / f"{n}.json") for n in names}
    deep = {n: records.read_json(metrics_dir / "deep" / f"{n}.json") for n in params.deep}
    expected = yaml.safe_load(Path(paths["expected"]).read_text())
    report = Path(paths["comparison"]).parent
    figures = Path(paths["figure"]).parent.relative_to(report)
    samples = Path(paths["samples"]).relative_to(report)
    return sections.Study(params, metrics, deep, expected, str(samples), str(figures))


def read_curves(params, metrics_dir):
    """{variant: [(step, log10 loss as written)]} from every train stage's curve CSV."""
    curves = {}
    for name in params.variants:
        with open(Path(metrics_dir) / "curves" / f"{name}.csv") as f:
            curves[name] = [(int(r["step"]), r["log10_loss"]) for r in csv.DictReader(f)]
    return curves


def long_curves(curves):
    """variant,step,log10_loss rows of every variant's curve, for one overlay plot."""
    rows = ["variant,step,log10_loss"]
    rows += [f"{name},{step},{value}" for name, points in curves.items() for step, value in points]
    return "\n".join(rows) + "\n"


@click.command()
@click.option("--metrics", required=True, help="the folder of every stage's metrics")
@click.option("--expected", required=True, help="the lecture's and notebook's numbers")
@click.option("--samples", required=True, help="the folder of the sampled names, to link")
@click.option("--comparison", required=True)
@click.option("--figure", required=True, help="the loss overlay, beside the other figures")
@click.option("--curves", required=True)
@stage_command
def main(**paths):
    params = read_params()
    this = record(params, paths)
    client, exp_id = mlflow_client()
    log(f"report: {len(params.variants)} variants, {len(params.deep)} deep configs")
    figure, out = Path(paths["figure"]), Path(paths["comparison"])
    study = read_study(params, paths)
    points = read_curves(params, paths["metrics"])
    with records.open_runs(client, exp_id, this, params) as runs, writing() as outputs:
        overlay_figure(
            overlay_panels(params, {n: [float(v) for _, v in c] for n, c in points.items()}),
            [step for step, _ in points[next(iter(points))]],
            f"log10 loss, mean per {params.train.curve_every} steps, seed {params.train.seeds[0]}",
            outputs.path(figure),
        )
        outputs.text(out, sections.comparison(study, figure.name))
        outputs.text(paths["curves"], long_curves(points))
        outputs.commit()
        records.log_outputs(client, runs, this, params)
    log(f"report: wrote {out}, {paths['curves']} and {figure}")


if __name__ == "__main__":
    run_stage(main)
