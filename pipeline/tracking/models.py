"""Each train stage's and deep stage's model (the lecture seed's) as an MLflow model on its run,
served by src/actgrad/mlp/served.py and deepnet/served.py; registry.py registers them.

A logged model carries its variant's or deep config's name and the md5 of the metrics JSON it
was evaluated in (the tags `variant` or `deep_config`, and `metrics_md5`), and its train and val
losses linked to the split they were measured on, so that MLflow's Models page ranks them.
"""

import importlib.metadata
import logging
import os
import tempfile
import time
from pathlib import Path

import mlflow.pyfunc
import pandas as pd
import torch
from mlflow.entities import Metric
from mlflow.models import infer_signature

import actgrad

from ..files import md5_of

CODE = Path(actgrad.__file__).parent  # the models' code: the whole package
REQUIREMENTS = ("torch", "mlflow", "pandas", "numpy", "pydantic", "ruamel.yaml")  # what it imports


def requirements():
    """The model's pip requirements, pinned as installed: inferring them is slow and needs the
    network."""
    return [f"{name}=={importlib.metadata.version(name)}" for name in REQUIREMENTS]


def log_mlp_model(client, runs, made):
    """A train stage's lecture-seed model (its model file holds every seed); its id, or None
    where the stage made no model here (sync of a clone without DVC's cache)."""
    state = made.values.get("model")
    if state is None:
        return None
    variant = made.params.variant(made.key)
    config = {
        "activation": variant.activation.model_dump(),
        "norm": variant.norm.model_dump(),
        "block_size": state["W1"].shape[1] // state["C"].shape[2],
        "sample_seed": made.params.train.sample_seed,
    }
    # the first seed's slice of every tensor, a running statistic under its own name
    tensors = {k.removeprefix("running_"): t[0].clone() for k, t in state.items() if k != "seeds"}
    tags = {"variant": made.key, "seed": int(state["seeds"][0])}
    return log_model(client, runs, made, "mlp", tensors, config, tags)


def log_deep_model(client, runs, made):
    """A deep stage's network (the first seed's, the notebook's); None where it diverged, with
    no finite weights to serve, or where the stage made no model here."""
    if made.values.get("model") is None or made.values["metrics"]["diverged_at_step"]:
        return None
    params = made.params
    config = {
        "deep": params.deep_config(made.key).model_dump(),
        "deep_train": params.deep_train.model_dump(),
        "block_size": params.split.block_size,
        "sample_seed": params.deep_train.sample_seed,
    }
    tags = {"deep_config": made.key, "seed": params.deep_train.seeds[0]}
    return log_model(client, runs, made, "deepnet", made.values["model"], config, tags)


def log_model(client, runs, made, package, tensors, config, tags):
    """`tensors` and `config` (what actgrad/<package>/served.py reads, the vocabulary added) as
    an MLflow model of the stage's top run, tagged `tags` and the md5 of its metrics JSON."""
    os.environ["MLFLOW_ENABLE_ARTIFACTS_PROGRESS_BAR"] = "false"
    logging.getLogger("mlflow").setLevel(logging.WARNING)
    values, name = made.values, next(iter(tags.values()))
    exp_id = client.get_run(runs.top).info.experiment_id
    example = pd.DataFrame({"name": ["emma", "andrej"]})
    output = pd.DataFrame({"name": ["emma"], "nll_per_char": [2.0], "perplexity": [7.4]})
    with tempfile.TemporaryDirectory() as tmp:
        torch.save(tensors, Path(tmp) / "weights.pt")
        mlflow.pyfunc.save_model(
            Path(tmp) / "model",
            python_model=str(CODE / package / "served.py"),
            artifacts={"weights": str(Path(tmp) / "weights.pt")},
            code_paths=[str(CODE)],
            model_config=config | {"vocab": values["split"]["vocab"].chars},
            signature=infer_signature(example, output, params={"sample": 0, "seed": 0}),
            input_example=example,
            pip_requirements=requirements(),
        )
        tags = tags | {"metrics_md5": md5_of(made.paths["metrics"])}
        model = client.create_logged_model(
            exp_id, name=name, source_run_id=runs.top, tags={k: str(v) for k, v in tags.items()}
        )
        client.log_model_artifacts(model.model_id, str(Path(tmp) / "model"))
    client.finalize_logged_model(model.model_id, "READY")
    metrics = values["metrics"]
    digest, now = values["summary"]["examples_sha256"][:8], int(time.time() * 1000)
    sources = [("", metrics)] + [("mean_", metrics["mean"])] * ("mean" in metrics)
    linked = [
        Metric(
            f"{kind}{split_name}_loss",
            source[f"{split_name}_loss"],
            now,
            0,
            model.model_id,
            "split",
            digest,
        )
        for kind, source in sources
        for split_name in ("train", "val")
    ]
    client.log_batch(runs.top, metrics=linked)
    return model.model_id
