"""A stage's MLflow runs: a top run and, for a train stage, one nested run per seed, their tags,
the data they trained on, and the fingerprint of the outputs they describe.

A stage module's `runs(params, key)` plans its runs (a `Plan`), and its `log(client, runs,
made)` fills them from what the stage made (`Made`: its values by role, the paths they were
written to, its params). The runner logs a stage's runs as it ends, and
`python -m pipeline.tracking.sync` rebuilds the runs of a stage that DVC skipped or restored
from its output files, read back by their kinds, with the same two functions: what MLflow holds
never depends on whether the stage ran.
"""

import hashlib
import math
from contextlib import ExitStack, contextmanager
from dataclasses import dataclass, field
from pathlib import Path

from .store import log_datasets, log_environment, mlflow_run, run_tags, set_tags


@dataclass
class Plan:
    name: str  # the top run's name
    tags: dict = field(default_factory=dict)  # the top run's own tags
    children: dict = field(default_factory=dict)  # {key: (name, tags)} of the nested runs
    dataset: bool = False  # the stage trains or evaluates on the split: its runs name it


@dataclass
class Runs:
    top: str
    children: dict  # {key: run id}, as in Plan.children

    @property
    def ids(self):
        return [self.top, *self.children.values()]


@dataclass
class Made:
    """What a stage made, as its log reads it."""

    params: object  # what the stage validated of params.yaml
    key: str | None  # the variant or config of a foreach stage
    values: dict  # {role: value}, inputs and outputs
    paths: dict  # {role: path}, inputs and outputs, relative to the project


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


def log_files(client, run_id, paths):
    """Each output file under its own path in the project, e.g. metrics/curves/kaiming.csv."""
    for path in map(Path, paths):
        client.log_artifact(run_id, str(path), str(path.parent))


def datasets(url, folder, summary):
    """names.txt and the split made from it (in `folder`, described by `summary`, both written
    by the split stage), as the inputs of every run that trains or evaluates on them."""
    return [
        {
            "name": "names.txt",
            "digest": summary["names_sha256"][:8],
            "source_type": "http",
            "source": {"url": url},
            "profile": {"names": summary["names"], "sha256": summary["names_sha256"]},
        },
        {
            "name": "split",
            "digest": summary["examples_sha256"][:8],
            "source_type": "local",
            "source": {"uri": str(folder)},
            "profile": {k: summary[k] for k in ("examples", "vocab_size", "examples_sha256")},
        },
    ]


@contextmanager
def open_runs(client, exp_id, stage, source, plan, made, **tags):
    """The plan's runs with their tags (and `tags` on each), and the split as their input.

    They end FINISHED with the block, FAILED if it raises, KILLED on Ctrl-C or SIGTERM.
    """
    with ExitStack() as stack:

        def start(name, own_tags, parent=None):
            all_tags = run_tags(stage, source, **own_tags, **tags)
            return stack.enter_context(mlflow_run(client, exp_id, name, all_tags, parent))

        top = start(plan.name, plan.tags)
        children = {key: start(name, t, top) for key, (name, t) in plan.children.items()}
        runs = Runs(top, children)
        log_environment(client, top)
        if plan.dataset:
            url = made.params.data.url
            found = datasets(url, made.paths["split"], made.values["summary"])
            log_datasets(client, runs.ids, found)
        yield runs


def fingerprint(md5s):
    """One hash of a stage's outputs ({path: md5}), as the tag dvc_outs carries it."""
    lines = "".join(f"{path} {md5}\n" for path, md5 in sorted(md5s.items()))
    return hashlib.md5(lines.encode()).hexdigest()


def tag_outputs(client, runs, md5s):
    """Tag the top run with the fingerprint of the outputs it describes ({path: md5})."""
    set_tags(client, runs.top, {"dvc_outs": fingerprint(md5s)})
