"""A deep config's network, as MLflow serves it: an MLflow "model from code", this file run to
load it (pipeline/tracking/models.py logs it with the notebook seed's weights)."""

import actgrad  # noqa: F401  (before torch: the kernels the study computes with)

# isort: split
import mlflow.models

from actgrad.deepnet.network import trained_logits
from actgrad.params import validate
from actgrad.recipes import DeepConfig, DeepTrainParams
from actgrad.serving import NamesModel


class DeepModel(NamesModel):
    def network(self, config, weights):
        cfg = validate(DeepConfig, config["deep"], "deep")
        train = validate(DeepTrainParams, config["deep_train"], "deep_train")
        return trained_logits(cfg, train, config["block_size"], len(config["vocab"]), weights)


mlflow.models.set_model(DeepModel())
