"""The real `dvc repro` on a small-step copy of the project, and what lands in MLflow."""

import csv
import json

import yaml
from conftest import LECTURE_SEED, copy_project, run
from mlflow.tracking import MlflowClient

VARIANTS = ["baseline", "softmax_fix", "tanh_fix", "kaiming", "batchnorm"]


def stages_run(output):
    return sorted(
        line.split("'")[1] for line in output.splitlines() if line.startswith("Running stage")
    )


def test_repro_then_a_one_variant_edit_reruns_only_that_stage_and_the_report(reproduced, tmp_path):
    first = (reproduced[0].parent / "repro.out").read_text()  # its `dvc repro` from scratch
    path, env = copy_project(reproduced, tmp_path, runs=True)
    deep = [f"deep@{c}" for c in yaml.safe_load((path / "params.yaml").read_text())["deep"]]
    assert stages_run(first) == sorted(
        ["download", "split", "calibrate", "report"] + [f"train@{v}" for v in VARIANTS] + deep
    )
    for v in VARIANTS:
        metrics = json.loads((path / f"metrics/{v}.json").read_text())
        assert set(metrics["seeds"]) == {str(LECTURE_SEED), "1"}
        assert metrics["train_loss"] == metrics["seeds"][str(LECTURE_SEED)]["train_loss"]
        assert (path / f"models/{v}.pt").is_file()
        assert (path / f"metrics/curves/{v}.csv").read_text().startswith("step,loss")
    report = (path / "reports/comparison.md").read_text()
    assert all(f"| {v}" in report for v in VARIANTS + ["calibrate"])

    # nothing changed: nothing runs
    assert "up to date" in run(["dvc", "status"], path, env).stdout
    assert stages_run(run(["dvc", "repro"], path, env).stdout) == []

    params = yaml.safe_load((path / "params.yaml").read_text())
    params["variants"]["kaiming"]["w2_scale"] = 0.02
    (path / "params.yaml").write_text(yaml.safe_dump(params, sort_keys=False))
    status = run(["dvc", "status", "--json"], path, env).stdout
    assert sorted(json.loads(status)) == ["report", "train@kaiming"]
    assert stages_run(run(["dvc", "repro"], path, env).stdout) == ["report", "train@kaiming"]

    # MLflow: a run per variant with its seeds nested under it, calibrate and the reports
    client = MlflowClient(env["MLFLOW_TRACKING_URI"])
    exp = client.get_experiment_by_name("actgrad")
    runs = client.search_runs([exp.experiment_id], max_results=1000)
    parents = [
        r
        for r in runs
        if "mlflow.parentRunId" not in r.data.tags and not r.info.run_name.startswith("deep ")
    ]
    names = sorted(r.info.run_name for r in parents)
    assert names == sorted(VARIANTS + ["kaiming", "calibrate", "report", "report"])
    kaiming = [r for r in parents if r.info.run_name == "kaiming"]
    assert {r.data.params["variant.w2_scale"] for r in kaiming} == {"0.01", "0.02"}
    newest = max(kaiming, key=lambda r: r.info.start_time)
    assert newest.data.tags["dvc_stage"] == "train@kaiming"
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
    artifacts = {a.path for a in client.list_artifacts(newest.info.run_id)}
    artifacts |= {a.path for a in client.list_artifacts(newest.info.run_id, "metrics")}
    artifacts |= {a.path for a in client.list_artifacts(newest.info.run_id, "reports/figures")}
    assert {
        "metrics/kaiming.json",
        "kaiming_loss_curve_seeds.png",
        "reports/figures/kaiming_init.png",
        "reports/figures/kaiming_update_ratio.png",
    } <= artifacts
    assert all(r.info.status == "FINISHED" for r in runs)
