"""The MLflow model of one trained MLP (an MLflow "model from code": MLflow runs this file to
load it, so nothing is unpickled; the weights load with torch.load(..., weights_only=True)).

predict(DataFrame with a `name` column) returns each name's mean negative log-likelihood per
character and perplexity; with params={"sample": n} it returns n names drawn from the model
instead, with the sample seed the train stage used (params={"seed": s} for others). Its
model_config (pipeline/models.py writes it) names the activation and norm, the vocabulary,
the context length and the sample seed.
"""

import actgrad  # noqa: F401  (before torch: the kernels the study computes with)

# isort: split
import functools
import json
import warnings

import mlflow.models
import mlflow.pyfunc
import pandas as pd
import torch

from actgrad.data.examples import Vocab
from actgrad.mlp.network import logits
from actgrad.recipes import Variant
from actgrad.sampling import sample_names, score

# the signature comes from the stage (pipeline/models.py), not from type hints
warnings.filterwarnings("ignore", message=".*Add type hints", category=UserWarning)


class NamesModel(mlflow.pyfunc.PythonModel):
    def load_context(self, context):
        config = context.model_config
        if isinstance(config, str):
            config = json.loads(config)
        variant = Variant.model_validate({k: config[k] for k in ("activation", "norm")})
        weights = torch.load(context.artifacts["weights"], weights_only=True)
        self.logits_of = functools.partial(logits, weights, variant=variant)
        self.vocab, self.block_size = Vocab(config["vocab"]), config["block_size"]
        self.sample_seed = config["sample_seed"]

    def predict(self, context, model_input, params=None):
        params = params or {}
        if params.get("sample"):
            seed = params.get("seed") or self.sample_seed
            names = sample_names(
                self.logits_of, self.vocab, self.block_size, params["sample"], seed
            )
            return pd.DataFrame({"name": names})
        names = [str(n) for n in model_input["name"]]
        scores = score(self.logits_of, names, self.vocab, self.block_size)
        return pd.DataFrame(
            {
                "name": names,
                "nll_per_char": [nll for nll, _ in scores],
                "perplexity": [ppl for _, ppl in scores],
            }
        )


mlflow.models.set_model(NamesModel())
