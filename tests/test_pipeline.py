"""The real `dvc repro` on a small-step copy of the project, what lands in MLflow, the deep
stages, and pipeline.repro's lanes."""

import csv
import json
import re
import sys

import pytest
import yaml
from conftest import DROPPED, LECTURE_SEED, ROOT, artifact_files, copy_project, run, stage_argv
from mlflow.tracking import MlflowClient

PNG = b"\x89PNG\r\n\x1a\n"
DEEP_FIGURES = ["activations", "gradients", "weight_grads", "update_ratio", "spectrum"]


def stages_run(output):
    return sorted(re.findall(r"^Running stage '(\S+)'", output, re.M))


def read_params(path):
    return yaml.safe_load((path / "params.yaml").read_text())


def write_params(path, params):
    (path / "params.yaml").write_text(yaml.safe_dump(params, sort_keys=False))


def client_of(env):
    client = MlflowClient(env["MLFLOW_TRACKING_URI"])
    return client, client.get_experiment_by_name("actgrad").experiment_id


def test_repro_then_a_one_variant_edit_reruns_only_that_stage_and_the_report(reproduced, tmp_path):
    first = (reproduced[0].parent / "repro.out").read_text()  # its `dvc repro` from scratch
    path, env = copy_project(reproduced, tmp_path, runs=True)
    params = read_params(path)
    variants, deep = list(params["variants"]), list(params["deep"])
    full = read_params(ROOT)  # the study's, less what the small project drops
    assert len(variants) == len(full["variants"]) - len(DROPPED["variants"]) > 5
    assert len(deep) == len(full["deep"]) - len(DROPPED["deep"]) > 5
    assert stages_run(first) == sorted(
        ["download", "split", "calibrate", "fold", "report"]
        + [f"train@{v}" for v in variants]
        + [f"deep@{c}" for c in deep]
    )
    for v in variants:
        metrics = json.loads((path / f"metrics/{v}.json").read_text())
        assert set(metrics["seeds"]) == {str(LECTURE_SEED), "1"}
        assert metrics["train_loss"] == metrics["seeds"][str(LECTURE_SEED)]["train_loss"]
        assert (path / f"models/{v}.pt").is_file()
        header = (path / f"metrics/curves/{v}.csv").read_text().splitlines()[0]
        assert header == "step,loss,log10_loss,loss_mean"
        with open(path / f"metrics/series/{v}.csv") as f:
            series = list(csv.DictReader(f))
        assert sorted({(int(r["seed"]), int(r["step"])) for r in series}) == [
            (seed, step) for seed in (1, LECTURE_SEED) for step in (0, 100, 200)
        ]
        for kind in ("init", "update_ratio", "units"):
            assert (path / f"reports/figures/{v}_{kind}.png").read_bytes()[:8] == PNG
    calibrated = params["calibrate"]["variant"]
    assert (path / f"models/{calibrated}_calibrated.pt").is_file()
    assert (path / f"models/{calibrated}_folded.pt").is_file()
    fold = json.loads((path / "metrics/fold.json").read_text())
    assert fold["largest_abs_logit_diff"] <= params["fold"]["tolerance"]
    report = (path / "reports/comparison.md").read_text()
    assert all(f"| {v} " in report for v in variants + ["calibrate"])

    # nothing changed: nothing runs
    assert "up to date" in run(["dvc", "status"], path, env).stdout
    assert stages_run(run(["dvc", "repro"], path, env).stdout) == []

    params["variants"]["kaiming"]["init"]["W2"] = 0.02
    write_params(path, params)
    status = run(["dvc", "status", "--json"], path, env).stdout
    assert sorted(json.loads(status)) == ["report", "train@kaiming"]
    assert stages_run(run(["dvc", "repro"], path, env).stdout) == ["report", "train@kaiming"]

    # MLflow: a run per variant with its seeds nested under it, calibrate, fold and the reports
    client, exp_id = client_of(env)
    runs = client.search_runs([exp_id], max_results=1000)
    parents = [
        r
        for r in runs
        if "mlflow.parentRunId" not in r.data.tags and not r.info.run_name.startswith("deep ")
    ]
    names = sorted(r.info.run_name for r in parents)
    assert names == sorted(variants + ["kaiming", "calibrate", "fold", "report", "report"])
    kaiming = [r for r in parents if r.info.run_name == "kaiming"]
    assert {r.data.params["variant.init.W2"] for r in kaiming} == {"randn x 0.01", "randn x 0.02"}
    newest = max(kaiming, key=lambda r: r.info.start_time)
    assert newest.data.tags["dvc_stage"] == "train@kaiming"
    assert newest.data.params["variant.init.W1"] == "kaiming"
    assert newest.data.params["variant.optimizer.name"] == "sgd"  # train.optimizer, resolved
    assert (
        newest.data.metrics["val_loss"]
        == json.loads((path / "metrics/kaiming.json").read_text())["val_loss"]
    )
    children = [r for r in runs if r.data.tags.get("mlflow.parentRunId") == newest.info.run_id]
    assert sorted(r.data.tags["seed"] for r in children) == sorted([str(LECTURE_SEED), "1"])
    curve = client.get_metric_history(children[0].info.run_id, "loss")
    assert [m.step for m in curve] == [0, 100, 200]
    with open(path / "metrics/curves/kaiming.csv") as f:  # the mean over seeds, on the variant
        mean = [float(row["loss_mean"]) for row in csv.DictReader(f)]
    assert [m.value for m in client.get_metric_history(newest.info.run_id, "loss_mean")] == mean
    for child in children:  # the update:data ratios, one mean per block of curve_every steps
        ratios = client.get_metric_history(child.info.run_id, "log10_update_ratio_W1")
        assert sorted(m.step for m in ratios) == [0, 100, 200]
        assert all(-6 < m.value < 0 for m in ratios)
    assert set(artifact_files(client, newest.info.run_id)) == {
        "kaiming_loss_curve_seeds.png",
        "metrics/kaiming.json",
        "metrics/curves/kaiming.csv",
        "metrics/series/kaiming.csv",
        "reports/figures/kaiming_init.png",
        "reports/figures/kaiming_update_ratio.png",
        "reports/figures/kaiming_units.png",
        "reports/samples/kaiming.txt",
    }
    assert all(r.info.status == "FINISHED" for r in runs)


def test_deep_stages_write_metrics_figures_and_runs_and_an_edit_reruns_only_that_config(
    reproduced, tmp_path
):
    path, env = copy_project(reproduced, tmp_path, runs=True)
    params = read_params(path)
    steps = params["deep_train"]["steps"]
    for name in params["deep"]:
        for kind in DEEP_FIGURES:
            png = path / f"reports/figures/deep/{name}_{kind}.png"
            assert png.read_bytes()[:8] == PNG, png
    tanh = json.loads((path / "metrics/deep/tanh_gain_5_3.json").read_text())
    linear = json.loads((path / "metrics/deep/linear_gain_5_3.json").read_text())
    lars = json.loads((path / "metrics/deep/linear_gain_5_3_lars.json").read_text())
    assert tanh["optimizer"] == "sgd" and lars["optimizer"] == "lars"
    assert tanh["steps_run"] == steps and tanh["diverged_at_step"] is None
    assert tanh["train_loss"] < tanh["init_loss"] and tanh["val_loss"] < tanh["init_loss"]
    assert tanh["final"]["layers"]["tanh1"]["label"] == "layer 1 (tanh)"
    assert set(tanh["final"]["weights"]) == {"C", "W1", "W2", "W3", "W4", "W5", "W6"}
    jacobian = tanh["spectra"]["init"]["jacobian"]
    assert jacobian["ratio"] == pytest.approx(jacobian["largest"] / jacobian["smallest"])
    assert jacobian["ratio"] > 1
    assert set(tanh["spectra"]["final"]["weights"]) == {f"W{i}" for i in range(1, 7)}
    # gain 5/3 without a squashing activation blows up under SGD; LARS's trust ratio holds it
    assert linear["diverged_at_step"] == linear["steps_run"] + 1 < steps
    assert linear["final"] is None
    assert linear["train_loss"] is None and linear["val_loss"] is None
    assert lars["diverged_at_step"] is None and lars["val_loss"] < lars["init_loss"]
    with open(path / "metrics/series/deep/tanh_gain_5_3.csv") as f:
        series = list(csv.DictReader(f))
    assert [int(r["step"]) for r in series] == list(range(1, steps, 10))  # means of 10 steps

    client, exp_id = client_of(env)
    runs = {
        r.data.tags["dvc_stage"]: r
        for r in client.search_runs([exp_id], "tags.dvc_stage LIKE 'deep@%'")
    }
    assert sorted(runs) == sorted(f"deep@{c}" for c in params["deep"])
    run_ = runs["deep@tanh_gain_5_3"]
    assert run_.info.status == "FINISHED" and run_.info.run_name == "deep tanh_gain_5_3"
    assert run_.data.params["deep.gain"] == "1.6666666666666667"
    assert run_.data.params["deep.optimizer.name"] == "sgd"  # deep_train.optimizer, resolved
    assert runs["deep@tanh_gain_3_lars"].data.params["deep.optimizer.name"] == "lars"
    for key in ("train_loss", "val_loss", "spectra.init.jacobian.ratio"):
        value = tanh
        for part in key.split("."):
            value = value[part]
        assert run_.data.metrics[key] == value, key
    assert (
        run_.data.metrics["final.layers.tanh1.act_std"]
        == tanh["final"]["layers"]["tanh1"]["act_std"]
    )
    history = client.get_metric_history(run_.info.run_id, "update_ratio_log10.W1")
    assert sorted(m.step for m in history) == list(range(1, steps, 10))
    assert set(artifact_files(client, run_.info.run_id)) == {
        "metrics/deep/tanh_gain_5_3.json",
        "metrics/series/deep/tanh_gain_5_3.csv",
        *(f"reports/figures/deep/tanh_gain_5_3_{kind}.png" for kind in DEEP_FIGURES),
    }

    params["deep"]["tanh_gain_5_3"]["gain"] = 3.0
    write_params(path, params)
    status = json.loads(run(["dvc", "status", "--json"], path, env).stdout)
    assert sorted(status) == ["deep@tanh_gain_5_3", "report"]
    assert stages_run(run(["dvc", "repro"], path, env).stdout) == ["deep@tanh_gain_5_3", "report"]
    edited = json.loads((path / "metrics/deep/tanh_gain_5_3.json").read_text())
    assert edited["init_loss"] != tanh["init_loss"]
    (newest,) = client.search_runs(
        [exp_id],
        "tags.dvc_stage = 'deep@tanh_gain_5_3'",
        order_by=["attributes.start_time DESC"],
        max_results=1,
    )
    assert newest.data.params["deep.gain"] == "3.0"
    assert newest.data.metrics["init_loss"] == edited["init_loss"]

    argv = stage_argv(path, "deep@batchnorm")
    argv[argv.index("batchnorm")] = "no_such"
    bad = run(argv, path, env, check=False)
    assert bad.returncode != 0
    last = bad.stderr.strip().splitlines()[-1]
    assert last.startswith("Error: deep.no_such: no such config; choose one of ['batchnorm', ")


PLAN = """
import json
from pipeline.repro import plan, read_dag
print(json.dumps(plan(*read_dag(), jobs=2)))
"""


def test_pipeline_repro_runs_lanes_of_independent_stages_and_only_what_changed(
    reproduced, tmp_path
):
    path, env = copy_project(reproduced, tmp_path)
    params = read_params(path)
    shared, lanes, joins = json.loads(run([sys.executable, "-c", PLAN], path, env).stdout)
    assert shared == ["download", "split"] and joins == ["report"] and len(lanes) == 2
    planned = shared + [s for lane in lanes for s in lane] + joins
    lock = yaml.safe_load((path / "dvc.lock").read_text())["stages"]
    assert sorted(planned) == sorted(lock)  # every stage once
    calibrated = params["calibrate"]["variant"]
    (lane,) = [lane for lane in lanes if f"train@{calibrated}" in lane]
    chain = [f"train@{calibrated}", "calibrate", "fold"]
    assert [s for s in lane if s in chain] == chain  # one lane, in the order they depend

    params["variants"]["kaiming"]["init"]["W2"] = 0.02
    write_params(path, params)
    out = run([sys.executable, "-m", "pipeline.repro"], path, env)
    assert stages_run(out.stdout) == ["report", "train@kaiming"]
    assert "up to date" in run(["dvc", "status"], path, env).stdout
    changed = run(["git", "status", "--porcelain"], path, env).stdout.split("\n")
    assert " M metrics/kaiming.json" in changed and " M reports/comparison.md" in changed
    assert not [line for line in changed if "baseline" in line or "deep" in line]


def test_no_cached_output_is_tracked_by_git():
    """DVC refuses to write an output that git tracks, so data and models stay out of git."""
    tracked = run(["git", "ls-files", "data", "models"], ROOT).stdout.split()
    assert [p for p in tracked if not p.endswith(".gitignore")] == []
