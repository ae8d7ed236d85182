"""Each stage's MLflow runs, built from the files the stage wrote.

A Record says which runs a stage logs (a top run, and for a train stage one nested run per
seed), which files it wrote, by role (the paths its command in dvc.yaml names), and how those
files and the params fill its runs. Each stage module that logs runs has a function
`record(params, args)`, `args` being its command's options as click parses them. The stage logs
its runs with it once its outputs are written, and `python -m pipeline.sync` rebuilds the runs
of a stage that DVC skipped or restored with the same function, reading the command from
dvc.lock, so what MLflow holds never depends on whether the stage ran.
"""

import csv
import hashlib
import importlib
import json
import math
import shlex
from collections.abc import Callable
from contextlib import ExitStack, contextmanager
from dataclasses import dataclass, field
from pathlib import Path

from .outputs import md5_of
from .tracking import log_datasets, log_environment, mlflow_run, run_tags, set_tags


@dataclass
class Record:
    stage: str  # as DVC names it: "train@kaiming", "calibrate"
    source: str  # the script the stage runs: MLflow's Source column
    name: str  # the top run's name
    outputs: dict[str, Path]  # every file the stage writes, by role
    fill: Callable  # fill(client, runs, record, params): log the outputs into the runs
    tags: dict = field(default_factory=dict)  # the top run's own tags
    children: dict = field(default_factory=dict)  # {key: (name, tags)} of the nested runs
    # (the split's folder, its summary) when the stage trains or evaluates on the split
    dataset: tuple[Path, Path] | None = None
    inputs: dict[str, Path] = field(default_factory=dict)  # other files the fill reads, by role


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


def read_json(path):
    return json.loads(Path(path).read_text())


def log_files(client, run_id, paths):
    """Each output file under its own path in the project, e.g. metrics/curves/kaiming.csv."""
    for path in map(Path, paths):
        client.log_artifact(run_id, str(path), str(path.parent))


# --- a stage's record, from its command -------------------------------------------------------


def command_args(cmd):
    """(module, {option: value}) of a stage's command, `python -m pipeline.<stage> ...`, as its
    click command parses it."""
    words = shlex.split(cmd)
    module = importlib.import_module(words[2])
    context = module.main.make_context(words[2], words[3:])
    return module, context.params


def record_of(stage, cmd, params):
    """The Record of a stage as dvc.lock names it ("train@kaiming"), from its command; None
    for a stage that logs no run."""
    module, args = command_args(cmd)
    return module.record(params, args) if hasattr(module, "record") else None


# --- the runs ---------------------------------------------------------------------------------


def datasets(params, folder, summary):
    """names.txt and the split made from it (in `folder`, described by `summary`, both written
    by the split stage), as the inputs of every run that trains or evaluates on them."""
    split = read_json(summary)
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
            "source": {"uri": str(folder)},
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
        log_environment(client, top)
        if record.dataset:
            log_datasets(client, runs.ids, datasets(params, *record.dataset))
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
