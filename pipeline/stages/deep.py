"""Stage deep@<config>: a short run of the lecture's deep network, and its instruments.

Writes the trained network, the metrics JSON, the series CSV of its curves and five figures,
and logs an MLflow run named "deep <config>".
"""

from actgrad.deepnet.figures import DEEP_FIGURES, deep_figures, describe
from actgrad.deepnet.metrics import metrics, series
from actgrad.deepnet.run import memory_needed, train_deep
from actgrad.errors import Diverged
from actgrad.recipes import read_params

from ..files import Csv, Json, Png, Split, Table, Tensors
from ..runner import Stage, StageError, check_memory
from ..tracking.models import log_deep_model
from ..tracking.records import Plan, flatten, log_files, numbers
from ..tracking.store import log_values


def compute(params, config, split, tasks):
    cfg, train = params.deep_config(config), params.deep_train
    check_memory("deep_train", train, memory_needed(train, split["train"][0].shape[1]))
    splits = {name: split[name] for name in ("train", "val")}
    groups = [(seed,) for seed in train.seeds]  # each seed trains on its own
    try:
        results = [r for (r,) in tasks(train_deep, groups, cfg, train, splits, len(split["vocab"]))]
    except Diverged as e:
        raise StageError(
            f"deep@{config}: {e}; lower deep.{config}.gain or its optimizer's lr"
        ) from None
    notebook = results[0]  # the first seed's: its model, series and figures
    figures = deep_figures(config, cfg, train, notebook)
    return {
        "model": notebook.state,
        "metrics": metrics(results, train.seeds, cfg),
        "series": Table(*series(notebook)),
        **{f"{kind}_figure": png for kind, png in figures.items()},
    }


def runs(params, config):
    return Plan(name=f"deep {config}", tags={"deep_config": config}, dataset=True)


def log_runs(client, runs, made):
    """Every number of the JSON as a metric, except those the curves end on; the network as
    an MLflow model."""
    params = made.params
    run_params = flatten(
        {
            "deep": params.deep_config(made.key).model_dump(),
            "deep_train": params.deep_train.model_dump(),
        }
    )
    curves = made.values["series"].series()
    metrics = {k: v for k, v in numbers(made.values["metrics"]).items() if k not in curves}
    log_values(client, runs.top, metrics, run_params, curves)
    log_files(client, runs.top, [made.paths[role] for role in OUTPUTS if role != "model"])
    log_deep_model(client, runs, made)


def summary(made):
    m = made.values["metrics"]
    if m["diverged_at_step"]:
        return f"diverged at step {m['diverged_at_step']}"
    return f"train {m['train_loss']:.4f} val {m['val_loss']:.4f}"


OUTPUTS = {
    "model": Tensors,
    "metrics": Json,
    "series": Csv,
    **{f"{kind}_figure": Png for kind in DEEP_FIGURES},
}
STAGE = Stage(
    name="deep",
    key="config",
    params=read_params,
    compute=compute,
    inputs={"split": Split, "summary": Json},
    outputs=OUTPUTS,
    runs=runs,
    log_runs=log_runs,
    describe=lambda made: (
        f"{describe(made.params.deep_config(made.key), made.params.deep_train)}, "
        f"{made.params.deep_train.steps:,} steps"
    ),
    summary=summary,
)

if __name__ == "__main__":
    STAGE.main()
