"""Each train stage's lecture-seed model as an MLflow model on its run (served by
src/actgrad/mlflow_model.py); registry.py registers them.

A logged model carries the variant's name and the md5 of the metrics JSON it was evaluated in
(the tags `variant` and `metrics_md5`), and its train and val losses linked to the split they
were measured on, so that MLflow's Models page ranks the variants.
"""

import importlib.metadata
import logging
import os
import tempfile
import time
import warnings
from pathlib import Path

import mlflow.pyfunc
import pandas as pd
import torch
from mlflow.entities import Metric
from mlflow.models import infer_signature

import actgrad
from actgrad.mlp.network import Weights

from ..files import md5_of

CODE = Path(actgrad.__file__).parent
REQUIREMENTS = ("torch", "mlflow", "pandas", "numpy", "pydantic", "ruamel.yaml")  # what it imports


def model_config(variant, vocab, block_size, sample_seed):
    """What src/actgrad/mlflow_model.py reads beside the weights, as plain JSON values."""
    return {
        "activation": variant.activation.model_dump(),
        "norm": variant.norm.model_dump(),
        "vocab": vocab.chars,
        "block_size": block_size,
        "sample_seed": sample_seed,
    }


def requirements():
    """The model's pip requirements, pinned as installed: inferring them is slow and needs the
    network."""
    return [f"{name}=={importlib.metadata.version(name)}" for name in REQUIREMENTS]


def log_model(client, runs, made):
    """The lecture seed's model of a train stage (its model file holds every seed) as an MLflow
    model of its top run, its losses linked to the split they were measured on; its id, or None
    if the stage made no model here (sync of a clone without DVC's cache)."""
    os.environ["MLFLOW_ENABLE_ARTIFACTS_PROGRESS_BAR"] = "false"
    logging.getLogger("mlflow").setLevel(logging.WARNING)
    variant, values = made.key, made.values
    if values.get("model") is None:
        return None
    spec, metrics = made.params.variant(variant), values["metrics"]
    exp_id = client.get_run(runs.top).info.experiment_id
    weights = Weights.from_state_dict(values["model"])
    example = pd.DataFrame({"name": ["emma", "andrej"]})
    output = pd.DataFrame({"name": ["emma"], "nll_per_char": [2.0], "perplexity": [7.4]})
    with tempfile.TemporaryDirectory() as tmp:
        tensors = Path(tmp) / "weights.pt"
        torch.save({k: t.clone() for k, t in weights.seed_slice(0).items()}, tensors)
        block_size = weights.params["W1"].shape[1] // weights.params["C"].shape[2]
        config = model_config(
            spec, values["split"]["vocab"], block_size, made.params.train.sample_seed
        )
        with warnings.catch_warnings():  # that predict() has no type hints: the signature is here
            warnings.simplefilter("ignore", UserWarning)
            mlflow.pyfunc.save_model(
                Path(tmp) / "model",
                python_model=str(CODE / "mlflow_model.py"),
                artifacts={"weights": str(tensors)},
                code_paths=[str(CODE)],
                model_config=config,
                signature=infer_signature(example, output, params={"sample": 0, "seed": 0}),
                input_example=example,
                pip_requirements=requirements(),
            )
        metrics_md5 = md5_of(made.paths["metrics"])
        tags = {"variant": variant, "metrics_md5": metrics_md5, "seed": weights.seeds[0]}
        model = client.create_logged_model(
            exp_id, name=variant, source_run_id=runs.top, tags={k: str(v) for k, v in tags.items()}
        )
        client.log_model_artifacts(model.model_id, str(Path(tmp) / "model"))
    client.finalize_logged_model(model.model_id, "READY")
    digest, now = values["summary"]["examples_sha256"][:8], int(time.time() * 1000)
    linked = [
        Metric(f"{kind}{split_name}_loss", value, now, 0, model.model_id, "split", digest)
        for kind, source in (("", metrics), ("mean_", metrics["mean"]))
        for split_name in ("train", "val")
        for value in [source[f"{split_name}_loss"]]
    ]
    client.log_batch(runs.top, metrics=linked)
    return model.model_id
