"""The deep network's instruments: real training runs, and the deep stage under DVC and MLflow."""

import dataclasses
import json

import pytest
import torch
import yaml
from conftest import ROOT, run
from mlflow.tracking import MlflowClient

from actgrad.config import ParamsError, load_params
from actgrad.deep import run_deep
from actgrad.report import deep_table

FIGURES = ["activations", "gradients", "weight_grads", "update_ratio"]


def repo_params():
    return load_params(yaml.safe_load((ROOT / "params.yaml").read_text()))


@pytest.fixture(scope="module")
def results(splits):
    """Every deep config of params.yaml, trained for deep_train.steps on the training split."""
    vocab, data = splits
    params = repo_params()
    X, Y = data["train"]
    threads = torch.get_num_threads()
    torch.set_num_threads(1)  # as the stage does: on matrices this small, threads only cost
    yield {
        name: run_deep(cfg, params.deep_train, X, Y, len(vocab))
        for name, cfg in params.deep.items()
    }
    torch.set_num_threads(threads)


def column(readout, key):
    return [layer[key] for layer in readout.layers.values()]


def test_first_step_matches_the_lecture(splits):
    """The lecture's printout for gain 5/3 at init: std and % saturated of each Tanh."""
    vocab, data = splits
    params = repo_params()
    train = dataclasses.replace(params.deep_train, steps=1)
    result = run_deep(params.deep["tanh_gain_5_3"], train, *data["train"], len(vocab))
    assert list(result.init.layers) == ["tanh1", "tanh3", "tanh5", "tanh7", "tanh9"]
    assert column(result.init, "act_std") == pytest.approx(
        [0.75, 0.69, 0.67, 0.66, 0.66], abs=0.005
    )
    assert column(result.init, "saturated_pct") == pytest.approx(
        [20.25, 8.38, 6.62, 5.47, 6.12],
        abs=0.01,  # printed with 2 decimals
    )
    assert result.losses[0] == pytest.approx(3.2962, abs=1e-4)


def test_gain_sets_how_activations_travel_through_the_stack(results):
    gain_1, gain_5_3, gain_3 = (results[f"tanh_gain_{g}"] for g in ("1", "5_3", "3"))
    # gain 1 under tanh: each layer squashes, so the std falls layer by layer
    stds = column(gain_1.init, "act_std")
    assert all(a > b for a, b in zip(stds, stds[1:])) and stds[-1] < 0.4
    # gain 3: far more saturated tanh outputs than 5/3, before and after training
    for moment in ("init", "final"):
        sat_3 = column(getattr(gain_3, moment), "saturated_pct")
        sat_5_3 = column(getattr(gain_5_3, moment), "saturated_pct")
        assert all(a > b + 20 for a, b in zip(sat_3, sat_5_3))
    # update:data ratios of the hidden weights settle above the lecture's 1e-3 guide
    hidden = [gain_5_3.update_ratios[f"W{i}"][-1] for i in range(1, 6)]
    assert all(-3 < r < -2 for r in hidden)


def test_linear_stacks_preserve_grow_or_shrink(results):
    gain_1, gain_5_3 = results["linear_gain_1"], results["linear_gain_5_3"]
    assert list(gain_1.init.layers) == ["linear0", "linear1", "linear2", "linear3", "linear4"]
    assert column(gain_1.init, "saturated_pct") == [None] * 5
    # gain 1 keeps the std at init; training then shrinks it layer by layer
    assert column(gain_1.init, "act_std") == pytest.approx([1.0] * 5, abs=0.05)
    stds = column(gain_1.final, "act_std")
    assert all(a > b for a, b in zip(stds, stds[1:])) and stds[-1] < 0.7
    # gain 5/3 multiplies the std by about 5/3 per layer, and lr 0.1 then blows it up
    stds = column(gain_5_3.init, "act_std")
    assert all(1.4 < b / a < 2.0 for a, b in zip(stds, stds[1:]))
    assert gain_5_3.diverged_at is not None and gain_5_3.diverged_at < 20
    assert gain_5_3.final is None and gain_5_3.train_loss is None


def test_batchnorm_keeps_every_layer_near_unit_std(results):
    bn = results["batchnorm"]
    assert list(bn.init.layers) == ["tanh2", "tanh5", "tanh8", "tanh11", "tanh14"]
    for moment in (bn.init, bn.final):
        assert column(moment, "preact_std") == pytest.approx([1.0] * 5, abs=0.05)
        assert all(s < 5 for s in column(moment, "saturated_pct"))
    assert bn.train_loss < bn.losses[0] - 0.5


def test_deep_params_are_validated():
    values = yaml.safe_load((ROOT / "params.yaml").read_text())
    values["deep"]["tanh_gain_1"]["gian"] = 2.0
    with pytest.raises(ParamsError, match=r"deep\.tanh_gain_1\.gian: unknown key"):
        load_params(values)
    del values["deep"]["tanh_gain_1"]["gian"]
    values["deep"]["tanh_gain_1"]["gain"] = 0
    with pytest.raises(ParamsError, match=r"deep\.tanh_gain_1\.gain: must be a number > 0"):
        load_params(values)
    values["deep"]["tanh_gain_1"]["gain"] = 1.0
    values["deep_train"]["n_layers"] = 0
    with pytest.raises(ParamsError, match=r"deep_train\.n_layers: must be an integer > 0"):
        load_params(values)


def test_stage_writes_metrics_figures_and_mlflow_run_then_reruns_only_the_edited_config(
    project,
):
    path, env = project
    params = yaml.safe_load((path / "params.yaml").read_text())
    params["deep"] = {k: params["deep"][k] for k in ("tanh_gain_5_3", "linear_gain_5_3")}
    params["deep_train"]["steps"] = 300
    (path / "params.yaml").write_text(yaml.safe_dump(params, sort_keys=False))

    out = run(["dvc", "repro", "deep"], path, env)
    assert "Running stage 'deep@tanh_gain_5_3'" in out.stdout
    for name in ("tanh_gain_5_3", "linear_gain_5_3"):
        for kind in FIGURES:
            png = path / f"reports/figures/deep/{name}_{kind}.png"
            assert png.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    tanh = json.loads((path / "metrics/deep/tanh_gain_5_3.json").read_text())
    linear = json.loads((path / "metrics/deep/linear_gain_5_3.json").read_text())
    assert tanh["steps_run"] == 300 and tanh["diverged_at_step"] is None
    assert tanh["train_loss"] < tanh["init_loss"]
    assert tanh["final"]["layers"]["tanh1"]["label"] == "layer 1 (Tanh)"
    assert set(tanh["final"]["weights"]) == {"C", "W1", "W2", "W3", "W4", "W5", "W6"}
    assert linear["final"] is None and linear["diverged_at_step"] == linear["steps_run"] + 1

    table = deep_table([("tanh_gain_5_3", tanh), ("linear_gain_5_3", linear)]).splitlines()
    assert len(table) == 2 + 10
    assert "| tanh_gain_5_3   | layer 1 (Tanh)   |" in table[2]
    assert "→ diverged" in table[-1]

    client = MlflowClient(env["MLFLOW_TRACKING_URI"])
    exp = client.get_experiment_by_name("actgrad")
    runs = {r.info.run_name: r for r in client.search_runs([exp.experiment_id])}
    assert set(runs) == {"deep tanh_gain_5_3", "deep linear_gain_5_3"}
    run_ = runs["deep tanh_gain_5_3"]
    assert run_.info.status == "FINISHED" and run_.data.tags["dvc_stage"] == "deep@tanh_gain_5_3"
    assert run_.data.params["deep.gain"] == "1.6666666666666667"
    assert (
        run_.data.metrics["final.layers.tanh1.act_std"]
        == tanh["final"]["layers"]["tanh1"]["act_std"]
    )
    history = client.get_metric_history(run_.info.run_id, "update_ratio_log10.W1")
    assert sorted(m.step for m in history) == list(range(1, 300, 10))  # means of 10 steps
    figures = client.list_artifacts(run_.info.run_id, "reports/figures/deep")
    assert {a.path for a in figures} == {
        f"reports/figures/deep/tanh_gain_5_3_{kind}.png" for kind in FIGURES
    }
    (json_file,) = client.list_artifacts(run_.info.run_id, "metrics/deep")
    assert json_file.path == "metrics/deep/tanh_gain_5_3.json"

    params["deep"]["tanh_gain_5_3"]["gain"] = 3.0
    (path / "params.yaml").write_text(yaml.safe_dump(params, sort_keys=False))
    status = json.loads(run(["dvc", "status", "--json"], path, env).stdout)
    assert [s for s in status if s.startswith("deep")] == ["deep@tanh_gain_5_3"]
    out = run(["dvc", "repro", "deep"], path, env)
    assert [line for line in out.stdout.splitlines() if line.startswith("Running stage")] == [
        "Running stage 'deep@tanh_gain_5_3':"
    ]

    bad = run(["python", "-m", "pipeline.deep", "no_such"], path, env, check=False)
    assert bad.returncode != 0
    assert "deep.no_such: no such config" in bad.stderr.strip().splitlines()[-1]
