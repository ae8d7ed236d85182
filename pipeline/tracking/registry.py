"""Every variant's current model as a version of one registered model, `actgrad-mlp`, and the
alias `champion` on the one with the lowest mean val loss: the report stage and `make sync`
keep it so. A variant's current model is the one evaluated in its metrics JSON (the tag
`metrics_md5` that models.py gives it)."""

from pathlib import Path

from ..files import Json, md5_of
from ..runner import log

REGISTERED = "actgrad-mlp"
CHAMPION = "champion"  # the alias of the version with the lowest mean val loss


def register(client, exp_id, params, metrics_dir):
    """Every variant's current model (the one evaluated in its metrics JSON) a version of
    REGISTERED, tagged with the variant's name, and CHAMPION the one with the lowest mean val
    loss; a variant whose model MLflow does not hold yet is named in one line and left out."""
    found, missing = {}, []
    for name in params.variants:
        metrics_path = Path(metrics_dir) / f"{name}.json"
        evaluated = f"tags.variant = '{name}' AND tags.metrics_md5 = '{md5_of(metrics_path)}'"
        models = client.search_logged_models(
            [exp_id],
            filter_string=evaluated,
            order_by=[{"field_name": "creation_time", "ascending": False}],
            max_results=1,
        )
        if models:
            found[name] = (models[0], Json.read(metrics_path)["mean"]["val_loss"])
        else:
            missing.append(name)
    if missing:
        log(f"MLflow holds no model of {', '.join(missing)} yet: `make sync` logs them")
    if not found:
        return
    if not client.search_registered_models(f"name = '{REGISTERED}'"):
        client.create_registered_model(REGISTERED)
    versions = {
        v.tags.get("model_id"): v for v in client.search_model_versions(f"name = '{REGISTERED}'")
    }
    numbers = {}
    for name, (model, _) in found.items():
        version = versions.get(model.model_id) or client.create_model_version(
            REGISTERED,
            source=model.artifact_location,
            run_id=model.source_run_id,
            tags={"variant": name, "model_id": model.model_id},
            model_id=model.model_id,
        )
        numbers[name] = version.version
    best = min(found, key=lambda n: found[n][1])
    client.set_registered_model_alias(REGISTERED, CHAMPION, numbers[best])
