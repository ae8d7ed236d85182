"""Every current model as a version of a registered model: each MLP variant's of `actgrad-mlp`,
each deep config's of `actgrad-deep`, and in each the alias `champion` on the version with the
lowest mean val loss. The report stage and `make sync` keep them so. A model is current where it
was evaluated in the metrics JSON of today's outputs (the tag `metrics_md5` that models.py gives
it)."""

from pathlib import Path

from ..files import Json, md5_of
from ..runner import log

CHAMPION = "champion"  # the alias of the version with the lowest mean val loss
# registered name: (the tag naming a model's variant or config, its metrics folder, the names)
FAMILIES = {
    "actgrad-mlp": ("variant", "", lambda params: params.variants),
    "actgrad-deep": ("deep_config", "deep", lambda params: params.deep),
}


def register(client, exp_id, params, metrics_dir):
    """Each family's current models registered, in one pass over FAMILIES; a variant or config
    whose model MLflow does not hold yet is named in one line and left out. A deep config that
    diverged has no model to serve."""
    missing = []
    for registered, (tag, folder, names) in FAMILIES.items():
        found = {}
        for name in names(params):
            metrics_path = Path(metrics_dir) / folder / f"{name}.json"
            metrics = Json.read(metrics_path)
            if metrics.get("diverged_at_step"):
                continue
            model = current_model(client, exp_id, tag, name, md5_of(metrics_path))
            if model is None:
                missing.append(name)
            else:
                found[name] = (model, metrics["mean"]["val_loss"])
        if found:
            register_family(client, registered, tag, found)
    if missing:
        log(f"MLflow holds no model of {', '.join(missing)} yet: `make sync` logs them")


def current_model(client, exp_id, tag, name, metrics_md5):
    """The newest logged model tagged `tag`=name and evaluated in the metrics of that md5."""
    models = client.search_logged_models(
        [exp_id],
        filter_string=f"tags.{tag} = '{name}' AND tags.metrics_md5 = '{metrics_md5}'",
        order_by=[{"field_name": "creation_time", "ascending": False}],
        max_results=1,
    )
    return models[0] if models else None


def register_family(client, registered, tag, found):
    """found {name: (model, mean val loss)} as versions of `registered` (one per model, made
    once), CHAMPION on the lowest val loss."""
    if not client.search_registered_models(f"name = '{registered}'"):
        client.create_registered_model(registered)
    versions = {
        v.tags.get("model_id"): v for v in client.search_model_versions(f"name = '{registered}'")
    }
    numbers = {}
    for name, (model, _) in found.items():
        version = versions.get(model.model_id) or client.create_model_version(
            registered,
            source=model.artifact_location,
            run_id=model.source_run_id,
            tags={tag: name, "model_id": model.model_id},
            model_id=model.model_id,
        )
        numbers[name] = version.version
    best = min(found, key=lambda n: found[n][1])
    client.set_registered_model_alias(registered, CHAMPION, numbers[best])
