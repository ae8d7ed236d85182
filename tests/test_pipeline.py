"""The real `dvc repro` on a small-step copy of the project, what lands in MLflow, the deep
stages, and the lanes of pipeline/tools/repro.py."""

import csv
import json
import re
import sys

import pytest
import torch
import yaml
from conftest import DROPPED, LECTURE_SEED, ROOT, artifact_files, copy_project, run, stage_argv
from mlflow.tracking import MlflowClient
from PIL import Image

from actgrad.deepnet.network import build_net
from actgrad.deepnet.probes import stack_jacobians
from actgrad.mlp.network import Weights
from actgrad.params import load_yaml
from actgrad.recipes import load_params

pytestmark = pytest.mark.slow  # DVC, MLflow and the stages on copies of the project

PNG = b"\x89PNG\r\n\x1a\n"
DEEP_FIGURES = ["activations", "gradients", "weight_grads", "update_ratio", "spectrum"]


def stages_run(output):
    """The stages that DVC ran, from its own output."""
    return sorted(re.findall(r"^Running stage '(\S+)'", output, re.M))


def stages_done(stderr):
    """The stages that `make repro` ran, from their end lines."""
    return sorted(re.findall(r"^\[[\d:]{8}\] (\S+): done in ", stderr, re.M))


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
    assert len(deep) == len(full["deep"]) - len(DROPPED["deep"]) >= 4
    assert stages_run(first) == sorted(
        ["download", "split", "calibrate", "fold", "demos", "report", "tour"]
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
        steps = params["variants"][v].get("steps", params["train"]["steps"])
        assert sorted({(int(r["seed"]), int(r["step"])) for r in series}) == [
            (seed, step) for seed in (1, LECTURE_SEED) for step in range(0, steps, 100)
        ]
        for kind in ("init", "update_ratio", "units"):
            assert (path / f"reports/figures/{v}_{kind}.png").read_bytes()[:8] == PNG
    calibrated = params["calibrate"]["variant"]
    assert (path / f"models/{calibrated}_calibrated.pt").is_file()
    assert (path / f"models/{calibrated}_folded.pt").is_file()
    # the folded model, computed again here from the two models the stages saved
    fold = json.loads((path / "metrics/fold.json").read_text())
    bn = Weights.from_state_dict(torch.load(path / f"models/{calibrated}.pt", weights_only=True))
    stats = torch.load(path / f"models/{calibrated}_calibrated.pt", weights_only=True)
    folded = torch.load(path / f"models/{calibrated}_folded.pt", weights_only=True)
    Xv = torch.load(path / "data/split/val.pt", weights_only=True)["X"]
    for s, seed in enumerate(bn.seeds):
        w = bn.seed_slice(s)
        emb = w["C"][Xv].view(len(Xv), -1)
        a = emb @ w["W1"]
        h = torch.tanh(w["norm_gain"] * (a - stats["mean"][s]) / stats["std"][s] + w["norm_bias"])
        expected = h @ w["W2"] + w["b2"]
        h = torch.tanh(emb @ folded["W1"][s] + folded["b1"][s])
        got = h @ folded["W2"][s] + folded["b2"][s]
        diff = (got - expected).abs().max().item()
        assert diff < 1e-4
        assert fold["seeds"][str(seed)]["max_abs_logit_diff"] == pytest.approx(diff, abs=1e-5)
    report = (path / "reports/comparison.md").read_text()
    assert all(f"| {v} " in report for v in variants + ["calibrate"])

    # nothing changed: nothing runs
    assert "up to date" in run(["dvc", "status"], path, env).stdout
    assert stages_run(run(["dvc", "repro"], path, env).stdout) == []

    params["variants"]["kaiming"]["init"]["W2"] = 0.02
    write_params(path, params)
    status = run(["dvc", "status", "--json"], path, env).stdout
    assert sorted(json.loads(status)) == ["report", "tour", "train@kaiming"]
    after = ["report", "tour", "train@kaiming"]
    assert stages_run(run(["dvc", "repro"], path, env).stdout) == after

    # MLflow: a run per variant with its seeds nested under it, calibrate, fold and the reports
    client, exp_id = client_of(env)
    runs = client.search_runs([exp_id], max_results=1000)
    parents = [
        r
        for r in runs
        if "mlflow.parentRunId" not in r.data.tags and not r.info.run_name.startswith("deep ")
    ]
    names = sorted(r.info.run_name for r in parents)
    stages = ["calibrate", "fold", "demos", "report", "tour"]
    assert names == sorted(variants + stages + ["kaiming", "report", "tour"])  # and the reruns
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
        # each a block mean of the stage's series: MLflow holds what the CSV holds
        seed = int(child.data.tags["seed"])
        with open(path / "metrics/series/kaiming.csv") as f:
            csv_ratios = [
                float(r["log10_update_ratio_W1"])
                for r in csv.DictReader(f)
                if int(r["seed"]) == seed
            ]
        assert [m.value for m in sorted(ratios, key=lambda m: m.step)] == csv_ratios
    assert set(artifact_files(client, newest.info.run_id)) == {
        "environment/packages.txt",
        "reports/figures/kaiming_seeds.png",
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
    # the final spectrum, computed again from the network the stage saved
    spec = load_params(params)
    net = build_net(spec.deep["tanh_gain_5_3"], spec.deep_train, 3, 27, torch.Generator())
    net.load(torch.load(path / "models/deep/tanh_gain_5_3.pt", weights_only=True))
    net.train(True)  # BatchNorm-free: the probe's Jacobian is the same in either mode
    X = torch.load(path / "data/split/train.pt", weights_only=True)["X"]
    g = torch.Generator().manual_seed(params["deep_train"]["seeds"][0])
    probe = X[torch.randint(0, len(X), (params["deep_train"]["jacobian_examples"],), generator=g)]
    values = torch.linalg.svdvals(stack_jacobians(net, probe).double())
    final = tanh["spectra"]["final"]["jacobian"]
    assert final["largest"] == pytest.approx(values.max().item(), rel=1e-6)
    assert final["smallest"] == pytest.approx(values.min().item(), rel=1e-6)
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
    assert runs["deep@linear_gain_5_3_lars"].data.params["deep.optimizer.name"] == "lars"
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
        "environment/packages.txt",
        "metrics/deep/tanh_gain_5_3.json",
        "metrics/series/deep/tanh_gain_5_3.csv",
        *(f"reports/figures/deep/tanh_gain_5_3_{kind}.png" for kind in DEEP_FIGURES),
    }

    params["deep"]["tanh_gain_5_3"]["gain"] = 3.0
    write_params(path, params)
    status = json.loads(run(["dvc", "status", "--json"], path, env).stdout)
    assert sorted(status) == ["deep@tanh_gain_5_3", "report", "tour"]
    after = ["deep@tanh_gain_5_3", "report", "tour"]
    assert stages_run(run(["dvc", "repro"], path, env).stdout) == after
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
from pipeline.tools.repro import plan, read_dag

print(json.dumps(plan(*read_dag(), jobs=2)))
"""


def test_pipeline_repro_runs_lanes_of_independent_stages_and_only_what_changed(
    reproduced, tmp_path
):
    path, env = copy_project(reproduced, tmp_path)
    params = read_params(path)
    shared, lanes, joins = json.loads(run([sys.executable, "-c", PLAN], path, env).stdout)
    assert shared == ["download", "split"] and joins == ["report", "tour"] and len(lanes) == 2
    planned = shared + [s for lane in lanes for s in lane] + joins
    lock = load_yaml((path / "dvc.lock").read_text())["stages"]
    assert sorted(planned) == sorted(lock)  # every stage once
    calibrated = params["calibrate"]["variant"]
    (lane,) = [lane for lane in lanes if f"train@{calibrated}" in lane]
    chain = [f"train@{calibrated}", "calibrate", "fold"]
    assert [s for s in lane if s in chain] == chain  # one lane, in the order they depend

    params["variants"]["kaiming"]["init"]["W2"] = 0.02
    write_params(path, params)
    out = run([sys.executable, "-m", "pipeline.tools.repro"], path, env)
    assert stages_done(out.stderr) == ["report", "tour", "train@kaiming"]
    assert "up to date" in run(["dvc", "status"], path, env).stdout
    changed = run(["git", "status", "--porcelain"], path, env).stdout.split("\n")
    assert " M metrics/kaiming.json" in changed and " M reports/comparison.md" in changed
    assert not [line for line in changed if "baseline" in line or "deep" in line]


def test_no_cached_output_is_tracked_by_git():
    """DVC refuses to write an output that git tracks, so data and models stay out of git."""
    tracked = run(["git", "ls-files", "data", "models"], ROOT).stdout.split()
    assert [p for p in tracked if not p.endswith(".gitignore")] == []


def test_each_edit_reruns_only_the_stages_it_touches(reproduced, tmp_path):
    path, env = copy_project(reproduced, tmp_path)
    params = read_params(path)
    trains = {f"train@{v}" for v in params["variants"]}
    deeps = {f"deep@{c}" for c in params["deep"]}

    def stale_after(section, key, value):
        edited = read_params(path)
        edited[section][key] = value
        write_params(path, edited)
        stale = set(json.loads(run(["dvc", "status", "--json"], path, env).stdout))
        run(["git", "checkout", "--", "params.yaml"], path, env)
        return stale

    assert stale_after("train", "curve_every", 50) == trains | {"report", "tour"}
    compared = {"linear_gain_5_3_lars": ["linear_gain_5_3"]}
    assert stale_after("report", "deep_compare", compared) == {"report"}
    gain = params["deep"]["tanh_gain_5_3"] | {"gain": 2.5}
    assert stale_after("deep", "tanh_gain_5_3", gain) == {"deep@tanh_gain_5_3", "report", "tour"}
    assert stale_after("deep_train", "steps", 50) == deeps | {"report"}

    def stale_after_edit(module):
        """What a content edit of `module` leaves out of date (DVC hashes content, not mtime)."""
        source = path / module
        text = source.read_text()
        source.write_text(text + "\n# an edit\n")
        stale = set(json.loads(run(["dvc", "status", "--json"], path, env).stdout))
        source.write_text(text)
        return stale

    # the math, not the data: an optimizer reruns every stage that reads a recipe
    # (the tour's notebook trains a miniature with the MLP's engine)
    recipes = trains | deeps | {"calibrate", "fold", "demos", "report", "tour"}
    assert stale_after_edit("src/actgrad/pieces/optimizers.py") == recipes
    # the MLP alone: its stages, no deep, download or split stage
    assert stale_after_edit("src/actgrad/mlp/engine.py") == trains | {"tour"}
    mlp_network = trains | {"calibrate", "fold", "demos", "tour"}
    assert stale_after_edit("src/actgrad/mlp/network.py") == mlp_network


def test_a_bare_variant_shows_up_in_the_report_mlflow_and_the_overlay(reproduced, tmp_path):
    """A user's first variant, added to params.yaml with nothing else edited."""
    path, env = copy_project(reproduced, tmp_path, runs=True)
    params = read_params(path)
    params["variants"]["mine"] = {
        "init": {"C": 1.0, "W1": "kaiming", "b1": 0.01, "W2": 0.01, "b2": "zeros"}
    }
    write_params(path, params)
    out = run([sys.executable, "-m", "pipeline.tools.repro"], path, env)
    assert stages_done(out.stderr) == ["report", "tour", "train@mine"]  # the tour shows them all
    run([sys.executable, "-m", "pipeline.tracking.sync"], path, env)

    report = (path / "reports/comparison.md").read_text()
    assert re.search(r"^\| mine +\| kaiming +\|", report, re.M)
    assert (
        "`mine` has no `report.compare` entry, so it is set against `kaiming`, the variant it "
        "differs from least (in nothing: the same recipe)." in report
    )
    assert re.search(r"^\| mine +\| \|h\| > 0\.99", report, re.M)  # the instruments' table
    curves = (path / "reports/loss_curves.csv").read_text().splitlines()
    assert len([row for row in curves if row.startswith("mine,")]) == 4  # step 0, then 3 blocks
    drawn = Image.open(path / "reports/figures/loss_curves.png").text["Description"]
    assert "mine" in drawn.split(": ", 1)[1].split(", ")

    client, exp_id = client_of(env)
    runs = client.search_runs([exp_id], "tags.dvc_stage = 'train@mine'")
    (run_,) = [r for r in runs if "mlflow.parentRunId" not in r.data.tags]
    assert run_.info.status == "FINISHED" and run_.data.tags["current"] == "true"
    versions = client.search_model_versions("name = 'actgrad-mlp'")
    assert "mine" in {v.tags["variant"] for v in versions}


def test_a_compare_entry_must_name_a_variant(reproduced, tmp_path):
    path, env = copy_project(reproduced, tmp_path)
    params = read_params(path)
    params["report"]["compare"]["adam"] = "mine"
    write_params(path, params)
    out = run(stage_argv(path, "report"), path, env, check=False)
    assert out.returncode == 1
    assert (
        out.stderr.strip()
        == "Error: report.compare.adam: 'mine' is not a variant (report left its outputs unchanged)"
    )
