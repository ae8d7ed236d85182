"""Each stage's MLflow runs, built from the files the stage wrote.

A Record says which runs a stage logs (a top run, and for a train stage one nested run per
seed), which files it writes (the ones dvc.lock lists for it), and how those files and the
params fill its runs. The stage logs its runs with it once its outputs are written, and
`python -m pipeline.sync` rebuilds the runs of a stage that DVC skipped or restored with the
same functions, so what MLflow holds never depends on whether the stage ran.

To give a new kind of stage its runs: write a builder (params, key) -> Record and a fill
function, and add the builder to KINDS under the stage's name in dvc.yaml.
"""

import csv
import hashlib
import json
import math
import tempfile
from collections.abc import Callable
from contextlib import ExitStack, contextmanager
from dataclasses import dataclass, field
from pathlib import Path

from actgrad.config import plain
from actgrad.plots import loss_curve_figure

from .outputs import md5_of
from .stage import StageError
from .tracking import log_datasets, log_values, mlflow_run, run_tags, set_tags

SPLIT_SUMMARY = Path("metrics/split.json")  # what the split holds: the runs' dataset inputs
DEEP_FIGURES = ("activations", "gradients", "weight_grads", "update_ratio", "spectrum")


@dataclass
class Record:
    stage: str  # as DVC names it: "train@kaiming", "calibrate"
    source: str  # the script the stage runs: MLflow's Source column
    name: str  # the top run's name
    outputs: dict[str, Path]  # every file the stage writes, by role; dvc.lock lists the same
    fill: Callable  # fill(client, runs, record, params): log the outputs into the runs
    tags: dict = field(default_factory=dict)  # the top run's own tags
    children: dict = field(default_factory=dict)  # {key: (name, tags)} of the nested runs
    trains: bool = True  # trains on the split: every run logs the dataset as its input

    @property
    def key(self):
        """The stage's foreach key in dvc.yaml ("kaiming"), "" for a single stage."""
        return self.stage.partition("@")[2]


@dataclass
class Runs:
    top: str
    children: dict  # {key: run id}, as in Record.children

    @property
    def ids(self):
        return [self.top, *self.children.values()]


# --- reading outputs --------------------------------------------------------------------------


def flatten(values, prefix=""):
    """{"a": {"b": 1}} as {"a.b": 1}: every leaf of nested dicts under a dotted key."""
    flat = {}
    for key, value in values.items():
        if isinstance(value, dict):
            flat.update(flatten(value, f"{prefix}{key}."))
        else:
            flat[f"{prefix}{key}"] = value
    return flat


def numbers(values):
    """The finite numbers among the leaves of `values`, as MLflow metrics."""
    return {
        key: value
        for key, value in flatten(values).items()
        if isinstance(value, int | float) and not isinstance(value, bool) and math.isfinite(value)
    }


def read_series(path, by=None):
    """A CSV of curves, {column: [(step, value)]} with finite values only.

    With `by` (a column such as "seed"), one such dict per value of that column.
    """
    groups = {}
    with open(path) as f:
        for row in csv.DictReader(f):
            group = groups.setdefault(int(row.pop(by)) if by else None, {})
            step = int(row.pop("step"))
            for column, text in row.items():
                value = float(text)
                if math.isfinite(value):
                    group.setdefault(column, []).append((step, value))
    return groups if by else groups.get(None, {})


def read_metrics(path):
    return json.loads(Path(path).read_text())


def log_files(client, run_id, paths):
    """Each output file under its own path in the project, e.g. metrics/curves/kaiming.csv."""
    for path in map(Path, paths):
        client.log_artifact(run_id, str(path), str(path.parent))


# --- one builder and one fill function per kind of stage -----------------------------------


def train(params, variant):
    seeds = params.train.seeds
    return Record(
        stage=f"train@{variant}",
        source="pipeline/train.py",
        name=variant,
        outputs={
            "model": Path(f"models/{variant}.pt"),
            "init": Path(f"reports/figures/{variant}_init.png"),
            "update_ratio": Path(f"reports/figures/{variant}_update_ratio.png"),
            "units": Path(f"reports/figures/{variant}_units.png"),
            "samples": Path(f"reports/samples/{variant}.txt"),
            "metrics": Path(f"metrics/{variant}.json"),
            "curve": Path(f"metrics/curves/{variant}.csv"),
            "series": Path(f"metrics/series/{variant}.csv"),
        },
        fill=fill_train,
        tags={"variant": variant, "seeds": list(seeds)},
        children={s: (f"{variant} seed {s}", {"variant": variant, "seed": s}) for s in seeds},
    )


def fill_train(client, runs, record, params):
    """The variant's run: its metrics, the lecture seed's curve and the mean over seeds, the
    figures and files; each seed's run: its losses and its curves (the gradient norms stay in
    the CSV and the figure: thousands of points per seed, seconds of logging)."""
    outputs, variant = record.outputs, record.key
    train_params = {k: v for k, v in plain(params.train).items() if k != "seeds"}
    run_params = flatten({"variant": plain(params.variants[variant]), "train": train_params})
    metrics = read_metrics(outputs["metrics"])
    per_seed = metrics.pop("seeds")
    log_values(client, runs.top, numbers(metrics), run_params, read_series(outputs["curve"]))
    series = read_series(outputs["series"], by="seed")
    for seed, run_id in runs.children.items():
        curves = {k: v for k, v in series[seed].items() if not k.startswith("grad_norm_")}
        log_values(client, run_id, numbers(per_seed[str(seed)]), run_params, curves)
    with tempfile.TemporaryDirectory() as tmp:
        seeds_figure = Path(tmp) / f"{variant}_loss_curve_seeds.png"
        steps = [step for step, _ in series[params.train.seeds[0]]["log10_loss"]]
        loss_curve_figure(
            {f"seed {s}": [v for _, v in series[s]["log10_loss"]] for s in runs.children},
            steps,
            f"{variant}: log10 loss, mean per {params.train.curve_every} steps",
            seeds_figure,
        )
        client.log_artifact(runs.top, str(seeds_figure))
    files = [path for role, path in outputs.items() if role != "model"]  # models: DVC's
    log_files(client, runs.top, files)


def calibrate(params):
    return Record(
        stage="calibrate",
        source="pipeline/calibrate.py",
        name="calibrate",
        outputs={
            "statistics": Path(f"models/{params.calibrate.variant}_calibrated.pt"),
            "figure": Path("reports/figures/bn_calibration.png"),
            "metrics": Path("metrics/calibrate.json"),
        },
        fill=fill_calibrate,
        tags={"variant": params.calibrate.variant},
    )


def fill_calibrate(client, runs, record, params):
    metrics = read_metrics(record.outputs["metrics"])
    metrics.pop("seeds")  # the mean and sd over them stay
    log_values(client, runs.top, numbers(metrics), {"variant": params.calibrate.variant})
    log_files(client, runs.top, [record.outputs["figure"], record.outputs["metrics"]])


def fold(params):
    variant = params.calibrate.variant
    return Record(
        stage="fold",
        source="pipeline/fold.py",
        name="fold",
        outputs={
            "model": Path(f"models/{variant}_folded.pt"),
            "metrics": Path("metrics/fold.json"),
        },
        fill=fill_fold,
        tags={"variant": variant},
    )


def fill_fold(client, runs, record, params):
    metrics = read_metrics(record.outputs["metrics"])
    metrics.pop("seeds")
    run_params = {"variant": params.calibrate.variant} | flatten({"fold": plain(params.fold)})
    log_values(client, runs.top, numbers(metrics), run_params)
    log_files(client, runs.top, [record.outputs["metrics"]])


def deep(params, config):
    figures = {k: Path(f"reports/figures/deep/{config}_{k}.png") for k in DEEP_FIGURES}
    return Record(
        stage=f"deep@{config}",
        source="pipeline/deep.py",
        name=f"deep {config}",
        outputs={
            **figures,
            "metrics": Path(f"metrics/deep/{config}.json"),
            "series": Path(f"metrics/series/deep/{config}.csv"),
        },
        fill=fill_deep,
        tags={"deep_config": config},
    )


def fill_deep(client, runs, record, params):
    """Every number of the JSON as a metric, except those the curves end on."""
    run_params = flatten(
        {"deep": plain(params.deep[record.key]), "deep_train": plain(params.deep_train)}
    )
    series = read_series(record.outputs["series"])
    metrics = numbers(read_metrics(record.outputs["metrics"]))
    metrics = {k: v for k, v in metrics.items() if k not in series}
    log_values(client, runs.top, metrics, run_params, series)
    log_files(client, runs.top, record.outputs.values())


def report(params):
    return Record(
        stage="report",
        source="pipeline/report.py",
        name="report",
        outputs={
            "comparison": Path("reports/comparison.md"),
            "figure": Path("reports/figures/loss_curves.png"),
            "curves": Path("reports/loss_curves.csv"),
        },
        fill=fill_report,
        trains=False,
    )


def fill_report(client, runs, record, params):
    log_files(client, runs.top, record.outputs.values())


KINDS = {  # stage name in dvc.yaml: its Record builder, or None for a stage that logs no run
    "download": None,
    "split": None,
    "train": train,
    "calibrate": calibrate,
    "fold": fold,
    "deep": deep,
    "report": report,
}


def record_of(stage, params):
    """The Record of a stage as dvc.lock names it ("train@kaiming"), None if it logs no run."""
    kind, _, key = stage.partition("@")
    if kind not in KINDS:
        raise StageError(
            f"{stage}: no MLflow record for this stage; add one to KINDS in pipeline/records.py"
        )
    builder = KINDS[kind]
    return builder and builder(params, *([key] if key else []))


# --- the runs ---------------------------------------------------------------------------------


def datasets(params):
    """names.txt and the split made from it, as the inputs of every run that trains on them."""
    split = read_metrics(SPLIT_SUMMARY)
    return [
        {
            "name": "names.txt",
            "digest": split["names_sha256"][:8],
            "source_type": "http",
            "source": {"url": params.data.url},
            "profile": {"names": split["names"], "sha256": split["names_sha256"]},
        },
        {
            "name": "split",
            "digest": split["examples_sha256"][:8],
            "source_type": "local",
            "source": {"uri": "data/split"},
            "profile": {k: split[k] for k in ("examples", "vocab_size", "examples_sha256")},
        },
    ]


@contextmanager
def open_runs(client, exp_id, record, params, **tags):
    """The record's runs with their tags (and `tags` on each), and the dataset as their input.

    They end FINISHED with the block, FAILED if it raises, KILLED on Ctrl-C or SIGTERM.
    """
    with ExitStack() as stack:

        def start(name, own_tags, parent=None):
            all_tags = run_tags(record.stage, record.source, **own_tags, **tags)
            return stack.enter_context(mlflow_run(client, exp_id, name, all_tags, parent))

        top = start(record.name, record.tags)
        children = {key: start(name, t, top) for key, (name, t) in record.children.items()}
        runs = Runs(top, children)
        if record.trains:
            log_datasets(client, runs.ids, datasets(params))
        yield runs


def fingerprint(md5s):
    """One hash of a stage's outputs ({path: md5}), as the tag dvc_outs carries it."""
    lines = "".join(f"{path} {md5}\n" for path, md5 in sorted(md5s.items()))
    return hashlib.md5(lines.encode()).hexdigest()


def log_outputs(client, runs, record, params, md5s=None):
    """Fill the runs from the record's output files, and tag the top run with their
    fingerprint: `md5s` ({path: md5}, from dvc.lock), else the hashes of the files."""
    record.fill(client, runs, record, params)
    md5s = md5s or {str(path): md5_of(path) for path in record.outputs.values()}
    set_tags(client, runs.top, {"dvc_outs": fingerprint(md5s)})
