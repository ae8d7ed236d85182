"""Records that cannot disagree: every stage declares the code it runs, and MLflow holds one
current run for every stage of dvc.lock, whether the stage ran or DVC skipped it. Real dvc,
git and MLflow on small-step copies of the project."""

import json
import re
import shutil
import sys

import pytest
import yaml
from conftest import ROOT, copy_project, run
from mlflow.tracking import MlflowClient

from actgrad.params import load_yaml

pytestmark = pytest.mark.slow  # DVC, MLflow and the stages on copies of the project

TRAINING_ENGINE = "src/actgrad/mlp/engine.py"


def lock_of(path):
    return load_yaml((path / "dvc.lock").read_text())["stages"]


# what the engine imports that the report does not
ENGINE_IMPORTS = ("evaluate.py", "mlp/__init__.py", "mlp/network.py", "mlp/probes.py")


# --- 1. every stage declares the code it runs -------------------------------------------------


def loaded_project_files(listing, roots):
    """The project files (src/, pipeline/) among the module files a stage listed on exit, less
    the packages' empty __init__ markers.

    actgrad is installed in editable mode from this checkout, pipeline imported from the
    project's folder: `roots` holds both.
    """
    files = set()
    for line in listing.read_text().split():
        for root in roots:
            if line.startswith(f"{root}/"):
                relative = line.removeprefix(f"{root}/")
                if relative.startswith(("src/", "pipeline/")):
                    files.add(relative)
    return {f for f in files if not f.endswith("/__init__.py") or (ROOT / f).read_text().strip()}


def undeclared(loaded, deps):
    """(project files loaded that no dep covers, .py deps never loaded)."""
    covered = [f for f in loaded if any(f == d or f.startswith(f"{d}/") for d in deps)]
    missing = sorted(set(loaded) - set(covered))
    unused = sorted(d for d in deps if d.endswith(".py") and d not in loaded)
    return missing, unused


SERVED_CODE = ("src/actgrad/serving.py", "src/actgrad/sampling.py")  # what a logged model runs


def all_diverged(path, stage):
    metrics = json.loads((path / f"metrics/deep/{stage.removeprefix('deep@')}.json").read_text())
    return all(seed["diverged_at_step"] for seed in metrics["seeds"].values())


def test_every_stage_declares_exactly_the_project_files_it_loads(reproduced):
    path, _ = reproduced
    modules = path.parent / "modules"
    for stage, entry in lock_of(path).items():
        loaded = loaded_project_files(modules / f"{stage}.txt", [path, ROOT])
        assert f"{entry['cmd'].split()[2].replace('.', '/')}.py" in loaded, stage
        deps = [d["path"] for d in entry["deps"]]
        missing, unused = undeclared(loaded, deps)
        if stage.startswith("deep@") and all_diverged(path, stage):
            unused = sorted(set(unused) - set(SERVED_CODE))  # it logged no model
        assert (missing, unused) == ([], []), stage
        # the tour's notebook trains a miniature with the engine, in its kernel
        trains = stage.startswith("train@") or stage == "tour"
        assert (TRAINING_ENGINE in loaded) == trains, stage
        # an edit of the MLP reruns no deep stage; the data stages load no math
        mlp = any(f.startswith("src/actgrad/mlp/") for f in loaded)
        assert mlp == stage.startswith(("train@", "calibrate", "fold", "demos", "tour")), stage
        math = any(f.startswith(("src/actgrad/pieces/", "src/actgrad/recipes")) for f in loaded)
        assert math != (stage in ("download", "split")), stage


def test_the_deps_check_finds_an_import_left_undeclared(reproduced, tmp_path):
    path, env = copy_project(reproduced, tmp_path)
    report = path / "pipeline/stages/report.py"
    report.write_text(
        report.read_text().replace(
            "from pathlib import Path\n",
            "from pathlib import Path\n\nimport actgrad.mlp.engine  # noqa: F401\n",
            1,
        )
    )
    modules = tmp_path / "modules"
    run(["dvc", "repro", "report"], path, {**env, "ACTGRAD_MODULES_DIR": str(modules)})
    loaded = loaded_project_files(modules / "report.txt", [path, ROOT])
    deps = [d["path"] for d in lock_of(path)["report"]["deps"]]
    engine = [TRAINING_ENGINE, *(f"src/actgrad/{m}" for m in ENGINE_IMPORTS)]
    assert undeclared(loaded, deps) == (sorted(engine), [])


# --- 2. MLflow mirrors dvc.lock ---------------------------------------------------------------


def all_runs(env):
    client = MlflowClient(env["MLFLOW_TRACKING_URI"])
    exp = client.get_experiment_by_name("actgrad")
    return client.search_runs([exp.experiment_id], max_results=1000) if exp else []


def tops(runs):
    return [r for r in runs if "mlflow.parentRunId" not in r.data.tags]


def current(runs):
    """{stage: [top run]} and the seeds' runs, of the runs tagged current."""
    now = [r for r in runs if r.data.tags.get("current") == "true"]
    by_stage = {}
    for r in tops(now):
        by_stage.setdefault(r.data.tags["dvc_stage"], []).append(r)
    return by_stage, [r for r in now if "mlflow.parentRunId" in r.data.tags]


def logging_stages(path):
    """The stages of dvc.lock that log runs: all but download and split."""
    return sorted(s for s in lock_of(path) if s not in ("download", "split"))


def repro(path, env):
    """What `make repro` runs; returns the stages DVC ran."""
    out = run(["dvc", "repro"], path, env)
    run([sys.executable, "-m", "pipeline.tracking.sync"], path, env)
    return sorted(re.findall(r"Running stage '(\S+)'", out.stdout))


def test_make_repro_mirrors_dvc_lock_in_mlflow_and_a_second_one_adds_nothing(reproduced, tmp_path):
    path, env = copy_project(reproduced, tmp_path, runs=True)
    runs = all_runs(env)
    by_stage, seeds = current(runs)
    stages = logging_stages(path)
    assert sorted(by_stage) == stages and all(len(r) == 1 for r in by_stage.values())
    trains = [s for s in stages if s.startswith("train@")]
    assert len(seeds) == 2 * len(trains)  # the small project's 2 seeds
    assert len(tops(runs)) == len(stages) and len(runs) == len(stages) + len(seeds)
    assert not [r for r in runs if r.data.tags.get("restored")]  # every stage ran
    lock = lock_of(path)
    params = yaml.safe_load((path / "params.yaml").read_text())
    split = json.loads((path / "metrics/split.json").read_text())
    commit = run(["git", "rev-parse", "HEAD~1"], path, env).stdout.strip()  # before "repro"
    for stage, (top,) in by_stage.items():
        tags = top.data.tags
        assert tags["mlflow.source.name"] == f"pipeline/stages/{stage.split('@')[0]}.py"
        assert tags["mlflow.source.git.commit"] == commit
        assert len(tags["dvc_lock_md5"]) == 32 and len(tags["dvc_outs"]) == 32
        datasets = {d.dataset.name: d.dataset for d in top.inputs.dataset_inputs}
        if stage == "report":
            assert datasets == {}
            continue
        assert datasets["names.txt"].digest == params["data"]["sha256"][:8]
        assert json.loads(datasets["split"].profile)["examples"] == split["examples"]
    client = MlflowClient(env["MLFLOW_TRACKING_URI"])
    (report,) = by_stage["report"]
    artifacts = {a.path for a in client.list_artifacts(report.info.run_id, "reports")}
    assert {"reports/comparison.md", "reports/loss_curves.csv"} <= artifacts
    figures = client.list_artifacts(report.info.run_id, "reports/figures")
    assert [a.path for a in figures] == ["reports/figures/loss_curves.png"]
    assert lock == lock_of(path)

    assert repro(path, env) == []
    assert sorted(r.info.run_id for r in all_runs(env)) == sorted(r.info.run_id for r in runs)
    assert current(all_runs(env))[0].keys() == by_stage.keys()


TIMINGS = re.compile(r".*_ms|inference_speedup")  # fold's: measured, in no output file


def comparable(client, run):
    """What a run holds, less what differs between two loggings of the same outputs."""
    metrics = {k: v for k, v in run.data.metrics.items() if not TIMINGS.fullmatch(k)}
    histories = {
        k: [(m.step, m.value) for m in client.get_metric_history(run.info.run_id, k)]
        for k in metrics
    }

    def files(folder=None):
        found = []
        for a in client.list_artifacts(run.info.run_id, folder):
            found += files(a.path) if a.is_dir else [(a.path, a.file_size)]
        return found

    # the parent's id, the sync's own tags, the commit checked out when the run was logged, and
    # the process that logged it
    skip = ("mlflow.parentRunId", "restored", "current", "mlflow.source.git.commit")
    skip += ("pid", "pid_started")
    tags = {k: v for k, v in run.data.tags.items() if k not in skip}
    datasets = sorted(
        (d.dataset.name, d.dataset.digest, d.dataset.profile) for d in run.inputs.dataset_inputs
    )
    return metrics, histories, run.data.params, tags, sorted(files()), datasets


def test_a_fresh_clone_lacks_the_cached_outputs_and_sync_rebuilds_every_run(reproduced, tmp_path):
    """A fresh clone lacks what DVC's cache holds, the data and the models: `dvc status` names
    exactly the stages that write them (CI, itself a fresh clone, retrains them all and checks
    their bits: make check-outputs). With the cache (a copy here, as `dvc pull` brings it),
    `make repro` runs nothing, and `make sync` rebuilds every stage's runs from the committed
    outputs, each holding what the stage logged when it ran."""
    path, env = reproduced
    clone = tmp_path / "clone"
    run(["git", "clone", "-q", str(path), str(clone)], tmp_path, env)
    env = {**env, "MLFLOW_TRACKING_URI": f"sqlite:///{tmp_path / 'mlflow.db'}"}
    stages = logging_stages(clone)
    cached = [s for s in stages if s.startswith(("train@", "deep@"))] + ["calibrate", "fold"]
    cached += ["demos", "tour"]  # which read the split
    stale = json.loads(run(["dvc", "status", "--json"], clone, env).stdout)
    assert sorted(stale) == sorted(["download", "split", *cached])

    shutil.copytree(path / ".dvc" / "cache", clone / ".dvc" / "cache")
    run(["dvc", "checkout"], clone, env)
    ran = run([sys.executable, "-m", "pipeline.tools.repro"], clone, env).stdout  # as make repro
    assert "Running stage" not in ran, ran
    assert run(["git", "status", "--porcelain"], clone, env).stdout == ""
    run([sys.executable, "-m", "pipeline.tracking.sync"], clone, env)
    runs = all_runs(env)
    by_stage, seeds = current(runs)
    assert sorted(by_stage) == stages and all(len(r) == 1 for r in by_stage.values())
    trains = [s for s in stages if s.startswith("train@")]
    assert len(seeds) == 2 * len(trains) and len(runs) == len(stages) + len(seeds)
    assert {r.data.tags.get("restored") for (r,) in by_stage.values()} == {"true"}

    # each rebuilt run holds what the stage logged when it ran in the project
    logged, _ = current(all_runs(reproduced[1]))
    here = MlflowClient(env["MLFLOW_TRACKING_URI"])
    there = MlflowClient(reproduced[1]["MLFLOW_TRACKING_URI"])
    for stage in stages:
        rebuilt, original = by_stage[stage][0], logged[stage][0]
        assert comparable(here, rebuilt) == comparable(there, original), stage

    assert repro(clone, env) == []
    assert len(all_runs(env)) == len(runs)


def test_current_follows_the_outputs_of_the_workspace(reproduced, tmp_path):
    path, env = copy_project(reproduced, tmp_path, runs=True)
    before, _ = current(all_runs(env))
    params = yaml.safe_load((path / "params.yaml").read_text())
    params["variants"]["kaiming"]["init"]["W2"] = 0.02
    (path / "params.yaml").write_text(yaml.safe_dump(params, sort_keys=False))
    assert repro(path, env) == ["report", "tour", "train@kaiming"]
    after, seeds = current(all_runs(env))
    changed = sorted(s for s in after if after[s][0].info.run_id != before[s][0].info.run_id)
    assert changed == ["report", "tour", "train@kaiming"]
    assert not after["train@kaiming"][0].data.tags.get("restored")
    old_kaiming = before["train@kaiming"][0].info.run_id
    stale = [r for r in all_runs(env) if r.data.tags.get("current") == "false"]
    assert old_kaiming in {r.info.run_id for r in stale} and len(stale) == 3 + 2  # + its seeds

    # back to the committed results: their runs are current again, and no run is added
    count = len(all_runs(env))
    run(["git", "checkout", "--", "."], path, env)
    run(["dvc", "checkout"], path, env)
    run([sys.executable, "-m", "pipeline.tracking.sync"], path, env)
    again, _ = current(all_runs(env))
    assert {s: r[0].info.run_id for s, r in again.items()} == {
        s: r[0].info.run_id for s, r in before.items()
    }
    assert len(all_runs(env)) == count


def test_sync_refuses_to_rebuild_runs_from_outputs_that_are_not_the_locked_ones(
    reproduced, tmp_path
):
    path, env = copy_project(reproduced, tmp_path)
    metrics = path / "metrics/calibrate.json"
    metrics.write_text(metrics.read_text().replace("2", "3", 1))
    out = run([sys.executable, "-m", "pipeline.tracking.sync"], path, env, check=False)
    last = out.stderr.strip().splitlines()[-1]
    assert out.returncode == 1 and "Traceback" not in out.stderr
    assert re.fullmatch(
        r"Error: metrics/calibrate.json: md5 \w{32}, but dvc.lock has \w{32} for calibrate; "
        r"`dvc repro calibrate` remakes it, or restore the locked file "
        r"\(`git checkout -- metrics/calibrate.json`, or `dvc checkout calibrate` for a cached "
        r"output\)",
        last,
    )

    run(["git", "checkout", "--", "metrics/calibrate.json"], path, env)
    params = yaml.safe_load((path / "params.yaml").read_text())
    params["variants"]["baseline"]["init"]["W2"] = 0.5  # not what train@baseline ran with
    (path / "params.yaml").write_text(yaml.safe_dump(params, sort_keys=False))
    env = {**env, "MLFLOW_TRACKING_URI": f"sqlite:///{tmp_path / 'other.db'}"}  # no run yet
    out = run([sys.executable, "-m", "pipeline.tracking.sync"], path, env, check=False)
    assert out.stderr.strip().splitlines()[-1] == (
        "Error: train@baseline: params.yaml has variants.baseline.init.W2 = 0.5, but dvc.lock "
        "ran the stage with 1.0; `dvc repro` runs it with params.yaml"
    )

    # a stage whose command writes a file that its outs do not list
    run(["git", "checkout", "--", "params.yaml"], path, env)
    lock = load_yaml((path / "dvc.lock").read_text())
    outs = lock["stages"]["train@baseline"]["outs"]
    outs[:] = [o for o in outs if o["path"] != "metrics/series/baseline.csv"]
    (path / "dvc.lock").write_text(yaml.safe_dump(lock, sort_keys=False))
    out = run([sys.executable, "-m", "pipeline.tracking.sync"], path, env, check=False)
    assert out.stderr.strip().splitlines()[-1] == (
        "Error: train@baseline: in dvc.lock its command writes, but its outs do not list, "
        "metrics/series/baseline.csv; the stage's cmd and outs in dvc.yaml must name the same "
        "files, and `dvc repro` brings dvc.lock up to date"
    )
