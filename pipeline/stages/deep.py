"""Stage deep@<config>: a short run of the lecture's deep network, and its instruments.

Writes the trained network, the metrics JSON, the series CSV of its curves and five figures,
and logs an MLflow run named "deep <config>".
"""

from actgrad.deepnet.figures import DEEP_FIGURES, deep_figures, describe
from actgrad.deepnet.metrics import metrics, series
from actgrad.deepnet.run import run_deep
from actgrad.errors import Diverged
from actgrad.recipes import read_params

from ..files import Csv, Json, Png, Split, Table, Tensors
from ..runner import Stage, StageError
from ..tracking.records import Plan, flatten, log_files, numbers
from ..tracking.store import log_values


def compute(params, config, split):
    cfg, train = params.deep_config(config), params.deep_train
    splits = {name: split[name] for name in ("train", "val")}
    try:
        result = run_deep(cfg, train, splits, len(split["vocab"]))
    except Diverged as e:
        raise StageError(
            f"deep@{config}: {e}; lower deep.{config}.gain or its optimizer's lr"
        ) from None
    return {
        "model": result.net.state_dict(),
        "metrics": metrics(result, cfg),
        "series": Table(*series(result)),
        **{f"{kind}_figure": png for kind, png in deep_figures(config, cfg, train, result).items()},
    }


def runs(params, config):
    return Plan(name=f"deep {config}", tags={"deep_config": config}, dataset=True)


def log_runs(client, runs, made):
    """Every number of the JSON as a metric, except those the curves end on."""
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
