"""The deep network: the notebook's run reproduced, the instruments of every config, LARS on the
stacks that diverge, and the Jacobian spectra against torch.func.

The configs' full runs are the study's own (metrics/deep/*.json): the deep stages train them,
and CI reruns the study before the tests, so these read what the code just made rather than
train the eleven networks again.
"""

import json
from types import SimpleNamespace

import pytest
import torch
import yaml
from conftest import ROOT

from actgrad.deepnet.network import BatchNorm1d, build_net
from actgrad.deepnet.probes import stack_jacobians
from actgrad.deepnet.run import run_deep
from actgrad.errors import ParamsError
from actgrad.recipes import load_params

PARAMS = load_params(yaml.safe_load((ROOT / "params.yaml").read_text()))


def as_result(m):
    """A deep stage's metrics JSON, read as its DeepResult is: read-outs, losses, spectra."""

    def readout(part):
        return part and SimpleNamespace(layers=part["layers"], weights=part["weights"])

    losses = None if m["train_loss"] is None else {"train": m["train_loss"], "val": m["val_loss"]}
    return SimpleNamespace(
        init=readout(m["init"]),
        final=readout(m["final"]),
        split_losses=losses,
        losses=[m["init_loss"]],
        diverged_at=m["diverged_at_step"],
        update_ratios={k: [v] for k, v in m["update_ratio_log10"].items()},
        spectra=m["spectra"],
    )


@pytest.fixture(scope="module")
def results():
    """Every deep config of params.yaml, as its stage trained it for deep_train.steps."""
    folder = ROOT / "metrics" / "deep"
    return {n: as_result(json.loads((folder / f"{n}.json").read_text())) for n in PARAMS.deep}


def column(readout, key):
    return [layer[key] for layer in readout.layers.values()]


def test_the_notebook_run_is_reproduced(results):
    """The notebook's stored output: BatchNorm, gain 1, 1,001 steps, running statistics."""
    run = results["notebook"]
    assert run.split_losses["train"] == pytest.approx(2.4002976417541504, abs=1e-4)
    assert run.split_losses["val"] == pytest.approx(2.3982467651367188, abs=1e-4)
    assert list(run.final.layers) == ["tanh2", "tanh5", "tanh8", "tanh11", "tanh14"]
    assert column(run.final, "act_std") == pytest.approx([0.63, 0.64, 0.65, 0.65, 0.65], abs=0.006)
    assert column(run.final, "saturated_pct") == pytest.approx(
        [2.78, 2.56, 2.25, 1.69, 1.88], abs=0.006
    )
    grad_std = [2.640702e-03, 2.245584e-03, 2.045742e-03, 1.983134e-03, 1.952382e-03]
    assert column(run.final, "grad_std") == pytest.approx(grad_std, rel=1e-3)
    ratios = [8.012630e-03, 4.881091e-02, 6.964619e-02, 6.073741e-02, 5.631483e-02, 5.570125e-02]
    measured = [w["grad_data_ratio"] for w in run.final.weights.values()]
    assert measured == pytest.approx(ratios + [1.160106e-01], rel=1e-3)
    assert run.losses[0] == pytest.approx(3.2870, abs=1e-4)


def test_first_step_matches_the_lecture(splits):
    """The lecture's printout for gain 5/3 at init: std and % saturated of each Tanh."""
    vocab, data = splits
    train = PARAMS.deep_train.model_copy(update=dict(steps=1))
    result = run_deep(PARAMS.deep_config("tanh_gain_5_3"), train, data, len(vocab))
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
    gain_0_5, gain_1, gain_5_3, gain_3 = (
        results[f"tanh_gain_{g}"] for g in ("0_5", "1", "5_3", "3")
    )
    for run in (gain_0_5, gain_1):  # too small a gain: each layer squashes
        stds = column(run.init, "act_std")
        assert all(a > b for a, b in zip(stds, stds[1:]))
    assert column(gain_0_5.init, "act_std")[-1] < 0.05 < 0.2 < column(gain_1.init, "act_std")[-1]
    for moment in ("init", "final"):  # gain 3: far more saturated tanh outputs than 5/3
        sat_3 = column(getattr(gain_3, moment), "saturated_pct")
        sat_5_3 = column(getattr(gain_5_3, moment), "saturated_pct")
        assert all(a > b + 20 for a, b in zip(sat_3, sat_5_3))
    hidden = [gain_5_3.update_ratios[f"W{i}"][-1] for i in range(1, 6)]
    assert all(-3 < r < -2 for r in hidden)


def test_linear_stacks_preserve_grow_or_shrink(results):
    gain_1, gain_5_3 = results["linear_gain_1"], results["linear_gain_5_3"]
    assert column(gain_1.init, "saturated_pct") == [None] * 5
    assert column(gain_1.init, "act_std") == pytest.approx([1.0] * 5, abs=0.05)
    stds = column(gain_5_3.init, "act_std")
    assert all(1.4 < b / a < 2.0 for a, b in zip(stds, stds[1:]))
    assert gain_5_3.diverged_at == 6 and gain_5_3.final is None and gain_5_3.split_losses is None


def test_lars_trains_the_stacks_that_sgd_cannot(results):
    """Each matrix moves by its own size times lr · trust, whatever its gradient: all layers
    at one update:data ratio, where SGD's spread over an order of magnitude."""
    assert results["linear_gain_5_3"].diverged_at is not None
    for name, sgd in (("linear_gain_5_3_lars", None), ("tanh_gain_3_lars", "tanh_gain_3")):
        run = results[name]
        assert run.diverged_at is None and run.split_losses["val"] < run.losses[0] - 0.5
        last = [r[-1] for r in run.update_ratios.values()]
        assert max(last) - min(last) < 0.2
        if sgd:
            sgd_last = [r[-1] for r in results[sgd].update_ratios.values()]
            assert max(sgd_last) - min(sgd_last) > 1


def test_batchnorm_keeps_every_layer_near_unit_std(results):
    bn = results["batchnorm"]
    assert list(bn.init.layers) == ["tanh2", "tanh5", "tanh8", "tanh11", "tanh14"]
    for moment in (bn.init, bn.final):
        assert column(moment, "preact_std") == pytest.approx([1.0] * 5, abs=0.05)
        assert all(s < 5 for s in column(moment, "saturated_pct"))
    assert bn.split_losses["train"] < bn.losses[0] - 0.5


def test_gain_orders_the_jacobian_from_vanishing_to_exploding(results):
    mean_square = [
        results[f"tanh_gain_{g}"].spectra["init"]["jacobian"]["mean_square"]
        for g in ("0_5", "1", "5_3", "3")
    ]
    assert mean_square == sorted(mean_square) and mean_square[0] < 0.01 < 10 < mean_square[-1]
    # a linear stack's spectrum is the product of its weights': the gain scales it, no more
    lin_1, lin_5_3 = (
        results[n].spectra["init"]["jacobian"] for n in ("linear_gain_1", "linear_gain_5_3")
    )
    assert lin_5_3["ratio"] == pytest.approx(lin_1["ratio"], rel=1e-4)
    assert lin_5_3["largest"] == pytest.approx(lin_1["largest"] * (5 / 3) ** 5, rel=1e-4)


@pytest.mark.parametrize("name", ["tanh_gain_5_3", "relu_gain_sqrt2", "batchnorm"])
def test_stack_jacobians_match_torch_func(splits, name):
    vocab, data = splits
    train = PARAMS.deep_train.model_copy(update=dict(n_hidden=16, n_layers=3))
    net = build_net(
        PARAMS.deep_config(name), train, 3, len(vocab), torch.Generator().manual_seed(0)
    )
    X = data["train"][0][:8]
    ours = stack_jacobians(net, X)
    x = net.C[X].view(len(X), -1)
    # BatchNorm with the batch's statistics held fixed, as stack_jacobians defines it
    fixed = {}
    h = x
    for block in net.blocks[:-1]:
        for layer in block:
            if isinstance(layer, BatchNorm1d):
                fixed[id(layer)] = (h.mean(0, keepdim=True), h.var(0, keepdim=True))
            h = layer(h)

    def stack(one):
        h = one[None]
        for block in net.blocks[:-1]:
            for layer in block:
                if isinstance(layer, BatchNorm1d):
                    mean, var = fixed[id(layer)]
                    h = layer.gamma * (h - mean) / torch.sqrt(var + layer.piece.eps) + layer.beta
                elif hasattr(layer, "piece"):
                    h = layer.piece.forward(h)
                else:
                    h = h @ layer.weight + (0 if layer.bias is None else layer.bias)
        return h[0]

    reference = torch.stack([torch.func.jacrev(stack)(row) for row in x]).transpose(1, 2)
    torch.testing.assert_close(ours, reference, rtol=1e-5, atol=1e-6)
    torch.testing.assert_close(
        torch.linalg.svdvals(ours), torch.linalg.svdvals(reference), rtol=1e-4, atol=1e-6
    )


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
    values["deep"]["tanh_gain_1"]["optimizer"] = {"name": "lamb"}
    with pytest.raises(
        ParamsError, match=r"deep\.tanh_gain_1\.optimizer\.name: unknown optimizer 'lamb'"
    ):
        load_params(values)
