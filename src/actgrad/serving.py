"""A trained network as an MLflow model: what mlp/served.py and deepnet/served.py, the MLflow
"models from code" (MLflow runs the file to load the model, so nothing is unpickled), share.

predict(DataFrame with a `name` column) returns each name's mean negative log-likelihood per
character and perplexity; with params={"sample": n} it returns n names drawn from the model
instead, with the sample seed its stage used (params={"seed": s} for others). Its model_config
(pipeline/tracking/models.py writes it) holds the vocabulary, the context length, the sample
seed, and what the network is; its weights load with torch.load(..., weights_only=True).
"""

import json

import mlflow.pyfunc
import pandas as pd
import torch
from mlflow.exceptions import MlflowException
from mlflow.protos.databricks_pb2 import INVALID_PARAMETER_VALUE

from .data.examples import Vocab
from .sampling import sample_names, score


class NamesModel(mlflow.pyfunc.PythonModel):
    """Scores and samples names with the network that `network(config, weights)` builds: a
    function from contexts to logits."""

    def network(self, config, weights):
        raise NotImplementedError

    def load_context(self, context):
        config = context.model_config
        if isinstance(config, str):
            config = json.loads(config)
        weights = torch.load(context.artifacts["weights"], weights_only=True)
        self.vocab, self.block_size = Vocab(config["vocab"]), config["block_size"]
        self.sample_seed = config["sample_seed"]
        self.logits_of = self.network(config, weights)

    def predict(self, context, model_input: pd.DataFrame, params=None):
        """The names' scores, or params["sample"] names drawn; the signature that the stage
        logs (pipeline/tracking/models.py) says so, the hint only that MLflow infers none. A
        bad name or param is an MlflowException naming it, which a server answers with a 400
        whose message says why (MLflow puts the input it failed on before it)."""
        params = params or {}
        for key in ("sample", "seed"):
            if not isinstance(params.get(key, 0), int) or params.get(key, 0) < 0:
                raise bad_input(f"params.{key}: must be an integer >= 0, got {params[key]!r}")
        if params.get("sample"):
            seed = params.get("seed") or self.sample_seed
            names = sample_names(
                self.logits_of, self.vocab, self.block_size, params["sample"], seed
            )
            return pd.DataFrame({"name": names})
        names = [str(n) for n in model_input["name"]]
        try:
            scores = score(self.logits_of, names, self.vocab, self.block_size)
        except ValueError as e:
            raise bad_input(f"name: {e}") from None
        return pd.DataFrame(
            {
                "name": names,
                "nll_per_char": [nll for nll, _ in scores],
                "perplexity": [ppl for _, ppl in scores],
            }
        )


def bad_input(message):
    return MlflowException(message, error_code=INVALID_PARAMETER_VALUE)
