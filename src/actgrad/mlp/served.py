"""An MLP variant's model, as MLflow serves it: an MLflow "model from code", this file run to
load it (pipeline/tracking/models.py logs it with the lecture seed's weights)."""

import actgrad  # noqa: F401  (before torch: the kernels the study computes with)

# isort: split
import functools

import mlflow.models

from actgrad.mlp.network import logits
from actgrad.params import validate
from actgrad.recipes import Variant
from actgrad.serving import NamesModel


class MlpModel(NamesModel):
    def network(self, config, weights):
        variant = validate(Variant, {k: config[k] for k in ("activation", "norm")}, "variant")
        return functools.partial(logits, weights, variant=variant)


mlflow.models.set_model(MlpModel())
