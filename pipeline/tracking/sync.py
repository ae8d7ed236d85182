"""MLflow mirrors dvc.lock: one current run for every stage that logs runs.

Run it after `dvc repro` (`make repro` does), `dvc pull`, `dvc checkout` or `dvc exp apply`.
For each such stage of dvc.lock, a FINISHED run whose outputs have the hashes the lock holds
is the stage's current run. A stage without one (DVC skipped it, restored it from its
run-cache, or its outputs came from another commit or machine) gets its runs rebuilt from its
committed output files, tagged restored. The current runs, with their seeds' runs, carry
current=true and the hash of the stage's lock entry (dvc_lock_md5); every other run gets
current=false and stays. A second sync changes nothing.
"""

import hashlib
import importlib
import json
import shlex
from pathlib import Path

import click

from actgrad.params import read_values

from ..files import Yaml, md5_of
from ..runner import PARAMS, StageError, log, one_line, run_fast
from . import records, registry
from .store import mlflow_client, set_tags


def read_lock(path="dvc.lock"):
    try:
        return Yaml.read(path)["stages"]  # YAML 1.2, as DVC writes it: PyYAML misreads 1e-05
    except FileNotFoundError:
        raise StageError(f"{path}: no such file; `dvc repro` runs the pipeline first") from None


def lock_md5(entry):
    """A hash of one stage's lock entry: its command, deps, params and outputs."""
    return hashlib.md5(json.dumps(entry, sort_keys=True).encode()).hexdigest()


def locked_files(entry):
    """{path: md5} of the stage's output files (a folder output has no file hash)."""
    return {o["path"]: o["md5"] for o in entry.get("outs", []) if not o["md5"].endswith(".dir")}


def stage_of(cmd):
    """(the Stage, its key, its {role: path}) of a command `python -m pipeline.stages.<x> ...`."""
    words = shlex.split(cmd)
    stage = importlib.import_module(words[2]).STAGE
    return (stage, *stage.parse(words[3:]))


def check_outputs(name, stage, paths, locked):
    """The stage's command and its outs in dvc.lock must name the same files, or no run
    matches."""
    written = {paths[role] for role in stage.outputs}
    differences = [
        f"{where} {', '.join(sorted(files))}"
        for where, files in [
            ("its command writes, but its outs do not list,", written - set(locked)),
            ("its outs list, but its command does not write,", set(locked) - written),
        ]
        if files
    ]
    if differences:
        raise StageError(
            f"{name}: in dvc.lock {'; '.join(differences)}; the stage's cmd and outs in "
            "dvc.yaml must name the same files, and `dvc repro` brings dvc.lock up to date"
        )


def find_runs(client, exp_id, stage, outs):
    """The FINISHED runs of `stage` whose outputs have the fingerprint `outs`: the current
    one if there is one, else the newest; None if there is none."""
    found = client.search_runs(
        [exp_id],
        f"tags.dvc_stage = '{stage}' and tags.dvc_outs = '{outs}' "
        "and attributes.status = 'FINISHED'",
        order_by=["attributes.start_time DESC"],
    )
    if not found:
        return None
    top = next((r for r in found if r.data.tags.get("current") == "true"), found[0])
    children = client.search_runs(
        [exp_id], f"tags.`mlflow.parentRunId` = '{top.info.run_id}'", max_results=1000
    )
    return [top, *children]


def check_rebuildable(stage, entry, values, locked):
    """The workspace must hold what dvc.lock says the stage ran with and wrote, since its runs
    are rebuilt from params.yaml and the output files."""
    locked_params = records.flatten(entry.get("params", {}).get("params.yaml", {}))
    workspace_params = records.flatten(values)
    for key, locked_value in locked_params.items():
        if workspace_params.get(key) != locked_value:
            raise StageError(
                f"{stage}: params.yaml has {key} = {workspace_params.get(key)!r}, but dvc.lock "
                f"ran the stage with {locked_value!r}; `dvc repro` runs it with params.yaml"
            )
    for path, md5 in locked.items():
        if Path(path).is_file() and md5_of(path) != md5:
            raise StageError(
                f"{path}: md5 {md5_of(path)}, but dvc.lock has {md5} for {stage}; "
                f"`dvc repro {stage}` remakes it, or restore the locked file "
                f"(`git checkout -- {path}`, or `dvc checkout {stage}` for a cached output)"
            )


def made_of(name, stage, params, key, paths):
    """What the stage made, read back from its files; its model None where it is absent (a clone
    without DVC's cache)."""
    values = {role: kind.read(paths[role]) for role, kind in stage.inputs.items()}
    for role, kind in stage.outputs.items():
        if role == "model" and not Path(paths[role]).is_file():
            log(f"{name}: {paths[role]} is absent (`dvc pull` brings it): no MLflow model")
            values[role] = None
        else:
            values[role] = kind.read(paths[role])
    return records.Made(params, key, values, paths)


def rebuild(client, exp_id, name, stage, made, locked, tags):
    """The stage's runs rebuilt from its committed outputs; their ids."""
    plan = stage.runs(made.params, made.key)
    with records.open_runs(
        client, exp_id, name, stage.source, plan, made, restored="true", **tags
    ) as runs:
        stage.log_runs(client, runs, made)
        records.tag_outputs(client, runs, locked)
    return runs.ids


def retag(client, runs, tags):
    """Set `tags` on runs that do not carry them yet."""
    for run in runs:
        if any(run.data.tags.get(k) != v for k, v in tags.items()):
            set_tags(client, run.info.run_id, tags)


def search_all(client, exp_id, query=""):
    """Every run of the experiment that `query` finds, page by page."""
    runs, token = [], None
    while True:
        page = client.search_runs([exp_id], query, max_results=1000, page_token=token)
        runs += page
        token = page.token
        if not token:
            return runs


@click.command()
@one_line
def main():
    """Make MLflow hold one current run for every stage of dvc.lock."""
    lock, values = read_lock(), read_values(PARAMS)
    client, exp_id, params = None, None, None
    current, restored = set(), []
    for name, entry in lock.items():
        stage, key, paths = stage_of(entry["cmd"])
        if stage.runs is None:
            continue
        if client is None:
            client, exp_id = mlflow_client()
            params = stage.params(PARAMS)
        locked = locked_files(entry)
        check_outputs(name, stage, paths, locked)
        tags = {"current": "true", "dvc_lock_md5": lock_md5(entry)}
        found = find_runs(client, exp_id, name, records.fingerprint(locked))
        if found:
            retag(client, found, tags)
            current.update(run.info.run_id for run in found)
            continue
        check_rebuildable(name, entry, values, locked)
        try:
            made = made_of(name, stage, params, key, paths)
        except FileNotFoundError as e:
            raise StageError(
                f"{e.filename}: no such file, and the runs of {name} are rebuilt from it; "
                f"`dvc pull` or `git checkout -- {e.filename}` restores it, or "
                f"`dvc repro {name}` remakes it"
            ) from None
        current.update(rebuild(client, exp_id, name, stage, made, locked, tags))
        restored.append(name)
    if client is None:
        return log(f"sync: {len(lock)} stages in dvc.lock, none of them logs runs")
    if "report" in lock:  # models of rebuilt train runs join the registry
        _, _, paths = stage_of(lock["report"]["cmd"])
        registry.register(client, exp_id, params, paths["metrics"])
    # every other run is not current: those that were, and those a store older than the
    # current=false a run is born with never tagged
    stale = [r for r in search_all(client, exp_id) if r.info.run_id not in current]
    retag(client, stale, {"current": "false"})
    stale = [r for r in stale if r.data.tags.get("current") == "true"]
    log(
        f"sync: {len(lock)} stages in dvc.lock; rebuilt the runs of {len(restored)} from their "
        f"outputs{': ' + ', '.join(restored) if restored else ''}; "
        f"{len(stale)} runs are no longer current"
    )


if __name__ == "__main__":
    run_fast(main, "sync")
