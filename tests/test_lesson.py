"""The report's lessons (issue 26), held to their numbers: each section is built from a study
whose metrics are made here, then one number is changed (on a deep copy) to check that the
sentence that reads it follows it, or flips. Pure functions of the report builder: fast."""

import copy
import math
import re
import statistics

import pytest

from actgrad.recipes import read_params
from actgrad.report import sections
from actgrad.report.tables import comparison_table, optimizer_table, within_tol
from actgrad.stats import mean_sd, seed_table
from pipeline.files import Table

# --- a study made of plain numbers, every variant and deep config of params.yaml ------------


@pytest.fixture(scope="module")
def params():
    from conftest import ROOT

    return read_params(ROOT / "params.yaml")


def seeded(seeds, **values):
    """A metrics dict of {key: one value per seed, or one value for every seed}."""
    per_seed = {k: v if isinstance(v, list) else [v] * len(seeds) for k, v in values.items()}
    return seed_table(per_seed, seeds)


def variant_metrics(params, name, val=2.1, **values):
    """A train stage's metrics JSON of a healthy variant; `values` replace its per-seed ones."""
    seeds, variant = params.train.seeds, params.variant(name)
    n = len(seeds)
    per_seed = dict(
        train_loss=[val - 0.05 + 0.001 * k for k in range(n)],
        val_loss=[val + 0.002 * k for k in range(n)],
        init_loss=3.3,
        dead_units_final=0.0,
        dead_units_max=0.0,
        distinct_units_final=200.0,
        negative_units_init=0.0,
        negative_units_final=0.0,
        distinct_dims_final=10.0,
        distinct_w1_rows_final=30.0,
    )
    if variant.batchnorm:
        per_seed |= dict(
            calibrated_mean_max_abs_diff=[0.02 + 0.001 * k for k in range(n)],
            calibrated_std_max_rel_diff=[0.01 + 0.001 * k for k in range(n)],
            calibrated_val_loss=[val - 0.001 + 0.002 * k for k in range(n)],
        )
    m = seeded(seeds, **(per_seed | values))
    tensors = list(variant.tensors)
    return m | {
        "init_ideal_loss": math.log(27),
        "inactive_rule": "|h| > 0.99",
        "init_inactive_fraction": 0.05,
        "init_dead_units": 0,
        "log10_update_ratio_first_1000_steps": {"C": -3.5, "W1": -3.4, "W2": -1.3},
        "first_nonzero_grad_step": dict.fromkeys(tensors, 0),
        "changed_from_init": dict.fromkeys(tensors, True),
        "unigram_train_loss": 2.82,
    }


def deep_metrics(params, name, val=2.4, ratio=-2.7, saturated=5.0, std=0.65, diverged=None):
    """A deep stage's metrics JSON; `diverged`: per seed, the step it diverged at or None."""
    train, cfg = params.deep_train, params.deep_config(name)
    seeds, n = train.seeds, train.n_layers
    diverged = diverged or [None] * len(seeds)
    tanh = cfg.activation.name == "tanh"
    keys = [f"layer{k}" for k in range(1, n + 1)]
    weights = ["C", *(f"W{k}" for k in range(1, n + 2))]
    layer = {
        "act_mean": 0.0,
        "act_std": std,
        "saturated_pct": saturated if tanh else None,
        "grad_std": 1e-3,
        "weight_grad_data": 1e-3,
    }
    layers = {k: layer | {"label": k} for k in keys}
    spectrum = {"largest": 2.0, "smallest": 0.5, "ratio": 4.0, "mean_square": 1.0}
    spectra = {"jacobian": spectrum, "weights": {w: spectrum for w in weights}}
    per_seed = {}
    for k, (seed, step) in enumerate(zip(seeds, diverged)):
        per_seed[str(seed)] = {
            "train_loss": None if step else val - 0.01 + 0.01 * k,
            "val_loss": None if step else val + 0.01 * k,
            "diverged_at_step": step,
            "update_ratio_log10": {w: None if step else ratio for w in weights},
            "saturated_pct": {k: None if step or not tanh else saturated for k in keys},
        }
    first = per_seed[str(seeds[0])]
    m = {
        "optimizer": cfg.optimizer.name,
        "init_loss": 3.3,
        "train_loss": first["train_loss"],
        "val_loss": first["val_loss"],
        "diverged_at_step": diverged[0],
        "update_ratio_log10": dict.fromkeys(weights, 0.0 if diverged[0] else ratio),
        "init": {"layers": layers, "weights": {}},
        "final": None if diverged[0] else {"layers": copy.deepcopy(layers), "weights": {}},
        "spectra": {"init": spectra, "final": None if diverged[0] else spectra},
        "seeds": per_seed,
    }
    if not any(diverged):
        m |= {"mean": {k: statistics.fmean(s[k] for s in per_seed.values()) for k in ("val_loss",)}}
    return m


def demos():
    ideal = math.log(27)
    return {
        "four_class": {
            "uniform": math.log(4),
            "confident_right": 0.0200,
            "confident_wrong": 5.0200,
            "ideal": math.log(4),
        },
        "first_batch_loss_by_w2_scale": {"1": 27.97, "0.1": 4.2326, "0.01": 3.3221, "0": ideal},
        "ideal_init_loss": ideal,
        "x_w_std": {
            "x": 1.0,
            "w_times_1": 3.16,
            "w_times_5": 15.8,
            "w_times_0.2": 0.632,
            "w_over_sqrt_fan_in": 1.0,
            "w_times_gain_over_sqrt_fan_in": 1.666,
        },
        "softmax_regression": {
            "equal": {
                "distinct_columns_after_one_step": 26,
                "first_loss": ideal,
                "train_loss": 2.4661,
                "val_loss": 2.4626,
            },
            "random": {
                "distinct_columns_after_one_step": 27,
                "first_loss": 3.2954,
                "train_loss": 2.4664,
                "val_loss": 2.4628,
            },
        },
    }


def make_study(params):
    """Every variant and deep config healthy, then the lessons' own numbers."""
    seeds = params.train.seeds
    n = len(seeds)
    metrics = {name: variant_metrics(params, name) for name in params.variants}
    metrics["baseline"]["init_loss"] = 27.88
    metrics["zero_init"] = variant_metrics(params, "zero_init", distinct_units_final=1.0)
    metrics["zero_init"] |= {
        "first_nonzero_grad_step": {"C": None, "W1": None, "b1": None, "W2": None, "b2": 0},
        "changed_from_init": {"C": False, "W1": False, "b1": False, "W2": False, "b2": True},
    }
    metrics["constant_init"] = variant_metrics(
        params, "constant_init", distinct_units_final=1.0, one_unit_val_loss=2.1
    )
    metrics["constant_embedding"] = variant_metrics(
        params, "constant_embedding", distinct_dims_final=1.0, distinct_w1_rows_final=3.0
    )
    for name, final in (("relu_dead", 185.0), ("leaky_relu_dead", 20.0), ("elu_dead", 0.0)):
        metrics[name] = variant_metrics(
            params,
            name,
            negative_units_init=185.0,
            negative_units_final=final,
            dead_units_final=final if name == "relu_dead" else 0.0,
            dead_units_max=185.0 if name == "relu_dead" else 0.0,
        )
    metrics["leaky_relu_dead"]["seeds"] = {
        s: v | {"dead_units_final": None} for s, v in metrics["leaky_relu_dead"]["seeds"].items()
    }
    metrics["calibrate"] = seeded(
        seeds,
        train_loss=[2.065 + 0.001 * k for k in range(n)],
        val_loss=[2.105 + 0.001 * k for k in range(n)],
        running_train_loss=[2.066 + 0.001 * k for k in range(n)],
        running_val_loss=[2.106 + 0.001 * k for k in range(n)],
        mean_max_abs_diff=[0.0270, 0.0280, 0.0262, 0.0271, 0.0272][:n],
        std_max_rel_diff=[0.0201, 0.0195, 0.0206, 0.0199, 0.0203][:n],
    )
    metrics["fold"] = {
        "largest_abs_logit_diff": 7e-7,
        **seeded(seeds, loss_diff=0.0, folded_val_loss=[2.105 + 0.001 * k for k in range(n)]),
    }
    deep = {name: deep_metrics(params, name) for name in params.deep}
    steps = [6] * len(params.deep_train.seeds)
    for name in ("linear_gain_5_3", "linear_gain_5_3_momentum"):
        deep[name] = deep_metrics(params, name, diverged=steps)
    deep["tanh_gain_3_lars"] = deep_metrics(params, "tanh_gain_3_lars", saturated=60.0)
    deep["tanh_gain_3"] = deep_metrics(params, "tanh_gain_3", saturated=40.0)
    deep["tanh_gain_3_momentum"] = deep_metrics(params, "tanh_gain_3_momentum", saturated=50.0)
    deep["tanh_lr_0_001"] = deep_metrics(params, "tanh_lr_0_001", val=3.2, ratio=-5.3)
    deep["tanh_no_fan_in"] = deep_metrics(params, "tanh_no_fan_in", saturated=90.0, std=0.97)
    for name, ratio in (
        ("batchnorm_gain_0_2", -1.5),
        ("notebook", -2.4),
        ("batchnorm", -2.8),
        ("batchnorm_gain_5", -3.7),
        ("batchnorm_no_fan_in", -4.8),
        ("batchnorm_no_fan_in_lr_1", -3.5),
    ):
        deep[name] = deep_metrics(params, name, ratio=ratio)
    linear_1 = deep["linear_gain_1"]["spectra"]["init"]
    linear_1["jacobian"] = linear_1["jacobian"] | {"ratio": 2.0, "mean_square": 3.4}
    for name in ("linear_gain_5_3", "linear_gain_5_3_momentum"):
        spectra = deep[name]["spectra"]["init"]
        spectra["jacobian"] = spectra["jacobian"] | {"ratio": 2.0, "mean_square": 566.0}
    columns = ["seed", "step", "grad_norm_W1", "grad_norm_b1"]
    series = {
        name: Table(columns, [(s, k * 100, 0.06, 2e-9) for s in seeds for k in range(3)])
        for name in params.variants
    }
    curves = {name: ([0, 500, 1500], [0.52, 0.45, 0.40]) for name in params.variants}
    curves["baseline"] = ([0, 500, 1500], [1.45, 0.74, 0.40])
    return sections.Study(
        params,
        metrics,
        deep,
        {
            "baseline": {
                "train_loss": {"value": 2.05, "tol": 0.005},
                "val_loss": {"value": 2.2, "tol": None},
            }
        },
        "samples",
        "figures",
        demos=demos(),
        series=series,
        curves=curves,
    )


@pytest.fixture
def study(params):
    return make_study(params)


def report(study):
    return sections.comparison(study, "loss_curves.png")


def section(text, title):
    """The section of the report whose heading starts with `title`."""
    match = re.search(rf"^## {re.escape(title)}.*?(?=^## |\Z)", text, re.M | re.S)
    assert match, f"no section {title!r}"
    return match.group(0)


# --- the whole report --------------------------------------------------------------------------


def test_every_lesson_has_its_section_and_cites_its_figures(study):
    text = report(study)
    for title in [
        "The loss at init",
        "Why the weights are scaled",
        "ReLUs that die",
        "Kaiming's other half",
        "BatchNorm: running vs calibrated",
        "BatchNorm's side effects",
        "The deep network miscalibrated",
        "2. Symmetry",
        "4. LARS",
        "5. Conditioning",
    ]:
        assert "figures/" in section(text, title), title
    for figure in [
        "figures/loss_curves.png",
        "figures/demo_init_loss.png",
        "figures/demo_weight_scale.png",
        "figures/demo_softmax_regression.png",
        "figures/relu_dead_units.png",
        "figures/relu_high_lr_units.png",
        "figures/constant_embedding_units.png",
        "figures/kaiming_fan_out_init.png",
        "figures/batchnorm_momentum_0_1_update_ratio.png",
        "figures/deep/tanh_lr_0_001_update_ratio.png",
        "figures/deep/tanh_no_fan_in_activations.png",
        "figures/deep/batchnorm_gain_5_update_ratio.png",
        "figures/deep/batchnorm_no_fan_in_lr_1_update_ratio.png",
        "figures/deep/tanh_gain_3_momentum_update_ratio.png",
    ]:
        assert f"]({figure})" in text, figure


def test_a_lesson_whose_names_params_leave_out_is_left_out(params):
    report_params = params.report.model_copy(
        update={
            "dead_relus": (),
            "kaiming_modes": (),
            "deep_miscalibrated": (),
            "deep_compare": {},
            "bias_before_batchnorm": (),
            "train_val_gap": (),
            "deep_batchnorm_gains": (),
            "deep_batchnorm_lr": (),
        }
    )
    study = make_study(params)
    study.params = params.model_copy(update={"report": report_params})
    text = report(study)
    for title in ("ReLUs that die", "Kaiming's other half", "BatchNorm's side effects"):
        assert f"## {title}" not in text
    assert "## The deep network miscalibrated" not in text and "## 4. LARS" not in text


# --- what the issue found untrue ------------------------------------------------------------


def test_the_largest_calibration_gap_is_the_max_over_seeds_not_the_mean(study):
    text = section(report(study), "BatchNorm: running vs calibrated")
    assert "0.0280 in the mean (absolute, seed 1)" in text  # not the mean over seeds, 0.0271
    assert "2.06% in the std (relative, seed 2)" in text
    study.metrics["calibrate"]["seeds"]["3"]["mean_max_abs_diff"] = 0.0300
    assert "0.0300 in the mean (absolute, seed 3)" in section(report(study), "BatchNorm: running")


def test_within_tol_names_what_it_checked():
    assert within_tol([("train_loss", True)]) == "yes: train"
    assert within_tol([("train_loss", True), ("val_loss", False)]) == "NO: val; yes: train"
    assert within_tol([("running_train_loss", True), ("running_val_loss", True)]) == (
        "yes: running train, running val"
    )
    assert within_tol([]) == ""


def test_the_lecture_table_checks_only_what_has_a_tolerance(study):
    rows = [("baseline", study.metrics["baseline"])]
    expected = {"baseline": {"train_loss": {"value": 2.05, "tol": 0.005}}}
    assert comparison_table(rows, expected)["within tol"][0] == "yes: train"
    expected["baseline"]["train_loss"]["value"] = 2.2
    assert comparison_table(rows, expected)["within tol"][0] == "NO: train"
    assert "(`baseline`'s val loss: shown, not checked)" in report(study)


def test_relu_high_lr_kills_none_and_the_sentence_says_so(study):
    text = section(report(study), "ReLUs that die")
    assert "`relu_high_lr` (lr 1, then 0.1) kills none of its 200 units" in text
    seeds = study.metrics["relu_high_lr"]["seeds"]
    seeds["1"]["dead_units_max"], seeds["1"]["dead_units_final"] = 7.0, 2.0
    text = section(report(study), "ReLUs that die")
    assert (
        "`relu_high_lr` (lr 1, then 0.1) kills up to 7 of its 200 units at some count, on 1 "
        in text
    )
    assert "kills none" in text  # relu_kaiming still does not


def test_dead_relus_stay_dead_and_leaky_and_elu_come_back(study):
    text = section(report(study), "ReLUs that die")
    assert "`relu_dead` (relu, b1 constant -6) starts with 185 of its 200 units" in text
    assert (
        "ends its 20,000 steps with 185. ReLU passes no gradient below zero: none comes back"
        in text
    )
    assert "with 20. Leaky ReLU passes 0.01 of the gradient below zero: 165 come back" in text
    assert "with 0. ELU passes the gradient times e^a below zero: every one comes back" in text
    for s in study.metrics["relu_dead"]["seeds"].values():
        s["negative_units_final"] = 180.0
    assert "with 180. ReLU passes no gradient below zero: 5 come back" in section(
        report(study), "ReLUs that die"
    )


def test_the_lars_sections_numbers_are_over_the_seeds_against_both_controls(study):
    text = section(report(study), "4. LARS")
    lars = study.deep["tanh_gain_3_lars"]
    vals = [s["val_loss"] for s in lars["seeds"].values()]
    assert (
        f"`tanh_gain_3_lars` (lars lr 0.1, momentum 0.9, trust 0.01) reaches val {mean_sd(vals)}"
        in text
    )
    assert "`tanh_gain_3_momentum` (momentum lr 0.1, momentum 0.9) reaches val" in text
    assert "`linear_gain_5_3` (sgd lr 0.1) diverges on every seed (step 6)" in text
    assert (
        "`linear_gain_5_3_momentum` (momentum lr 0.1, momentum 0.9) diverges on every seed" in text
    )
    # the saturation LARS raises, in numbers, and the verdict that flips with them
    assert "LARS leaves 60.0% of the tanh units of `tanh_gain_3_lars` saturated" in text
    assert "40.0% (40.0%) with `tanh_gain_3`, 50.0% (50.0%) with `tanh_gain_3_momentum`" in text
    assert "LARS's saturation is above `tanh_gain_3`'s and above `tanh_gain_3_momentum`'s" in text
    study.deep["tanh_gain_3_momentum"] = deep_metrics(
        study.params, "tanh_gain_3_momentum", saturated=70.0
    )
    assert "above `tanh_gain_3`'s and below `tanh_gain_3_momentum`'s" in section(
        report(study), "4. LARS"
    )


def test_a_seed_that_diverges_is_counted_not_averaged(study, params):
    n = len(params.deep_train.seeds)
    study.deep["tanh_gain_3"] = deep_metrics(params, "tanh_gain_3", diverged=[None] * (n - 1) + [9])
    text = section(report(study), "4. LARS")
    done = [s["val_loss"] for s in study.deep["tanh_gain_3"]["seeds"].values() if s["val_loss"]]
    assert f"diverges on 1 of {n} seeds (step 9); the others reach val {mean_sd(done)}" in text
    table = optimizer_table([("tanh_gain_3", study.deep["tanh_gain_3"])])
    assert table[f"val mean ± sd (n={n})"][0] == f"{mean_sd(done)} (1 of {n} diverged)"


def test_conditioning_says_which_of_the_best_conditioned_diverge(study, params):
    text = section(report(study), "5. Conditioning")
    assert (
        "The best conditioned is `linear_gain_1`, `linear_gain_5_3` and `linear_gain_5_3_momentum`"
        in text
    )
    assert (
        "`linear_gain_5_3` and `linear_gain_5_3_momentum` diverge (step 6), with a mean squared "
        "singular value of 566 at init, while `linear_gain_1` (3.4) trains." in text
    )
    for name in ("linear_gain_5_3", "linear_gain_5_3_momentum"):
        spectra = deep_metrics(params, name)["spectra"]
        study.deep[name] = deep_metrics(params, name) | {"spectra": spectra}
        spectra["init"]["jacobian"] = spectra["init"]["jacobian"] | {"ratio": 2.0}
    assert "None of them diverges." in section(report(study), "5. Conditioning")


def test_the_tanh_gains_are_the_fan_in_scaled_stacks_once_each(study):
    text = section(report(study), "5. Conditioning")
    assert "as the tanh stacks' gain goes 0.5 → 1 → 1.67 → 3," in text


@pytest.mark.parametrize(
    "diff, words",
    [
        (0.0, "equals BatchNorm's on every seed, to the last bit"),
        (2e-8, "to the printed digits on every seed (they differ by 2e-08 at most)"),
        (3e-4, "differs from BatchNorm's by up to 0.0003"),
    ],
)
def test_the_fold_says_how_far_apart_the_losses_are_as_a_person_would(study, diff, words):
    for s in study.metrics["fold"]["seeds"].values():
        s["loss_diff"] = diff
    text = section(report(study), "3. BatchNorm folded")
    assert words in text and "by 0 at most" not in text


def test_the_hockey_stick_is_drawn_and_said(study):
    text = report(study)
    assert "`baseline` starts at log10 1.45 (loss 28.18) and its first block averages 0.74" in text
    assert "`baseline`'s curve is the lecture's hockey stick" in text
    study.curves["baseline"] = ([0, 500, 1500], [0.52, 0.48, 0.40])
    assert "no hockey stick" in report(study)


# --- the lecture's demos -------------------------------------------------------------------------


def test_the_init_loss_section_reads_the_toy_and_the_w2_sweep(study):
    text = section(report(study), "The loss at init")
    assert "ln 4 = 1.3863" in text and "0.0200 where that class is the right one" in text
    assert "5.0200 where it is wrong, 5 more" in text
    assert "W2 × 1, 0.1, 0.01, 0 starts at 27.9700, 4.2326, 3.3221, 3.2958" in text
    assert "from W2 × 0.01 on, the loss is within 1% of the uniform one" in text
    assert "W2 × 0 makes every logit b2 = 0" in text
    study.demos["first_batch_loss_by_w2_scale"]["0.01"] = 3.5
    assert "from W2 × 0 on" in section(report(study), "The loss at init")


def test_the_weight_scale_section_reads_each_std(study):
    text = section(report(study), "Why the weights are scaled")
    assert "3.16 for w × 1, 15.80 for w × 5, 0.63 for w × 0.2" in text
    assert "w gives 1.00, x's own scale" in text and "on top 1.67" in text
    assert "within 0.1% of w's scale × √fan_in × x's std" in text
    study.demos["x_w_std"]["w_times_5"] = 17.0
    assert "within 7.5% of" in section(report(study), "Why the weights are scaled")


# --- d2l 5.4, as posed ------------------------------------------------------------------------


def test_exercise_1_shows_the_embeddings_dimensions_kept_then_broken(study):
    text = section(report(study), "2. Symmetry")
    assert "C has 1 distinct column of 10" in text
    assert "and W1 3 distinct rows of 30 (3 positions × 10 dimensions)" in text
    assert "works as a 1-dimensional one" in text
    assert "(its hidden units split apart, 200 distinct, but nothing tells one dimension" in text
    assert "`constant_init_random_w2` keeps 10 distinct dimensions" in text
    for s in study.metrics["constant_embedding"]["seeds"].values():
        s["distinct_dims_final"] = 10.0
    text = section(report(study), "2. Symmetry")
    assert "C has 10 distinct columns of 10" in text and "the symmetry did not hold" in text


def test_exercise_2_softmax_regression_from_equal_weights(study):
    text = section(report(study), "2. Symmetry")
    assert "from every weight equal reaches train 2.4661 and val 2.4626" in text
    assert "the same loss, to 0.0003" in text
    assert "after one step 26 of the 27 columns differ (two columns stay equal" in text
    regression = study.demos["softmax_regression"]
    regression["equal"] |= {"val_loss": 2.60, "distinct_columns_after_one_step": 27}
    text = section(report(study), "2. Symmetry")
    assert "they differ by up to 0.1372" in text and "27 of the 27 columns differ. " in text


def test_constant_init_that_splits_is_not_called_one_unit_copied(study):
    for s in study.metrics["constant_init"]["seeds"].values():
        s["distinct_units_final"] = 3.0
    text = section(report(study), "2. Symmetry")
    assert (
        "W1 has 3 distinct columns over the seeds" in text and "one hidden unit copied" not in text
    )


# --- Kaiming's other half ----------------------------------------------------------------------


def test_kaiming_modes_give_each_inits_std_and_its_verdict(study):
    text = section(report(study), "Kaiming's other half")
    assert "W1 is 30 × 200" in text
    assert "`kaiming` (W1: kaiming) starts W1 at std 0.304 and W2 at 0.01" in text
    assert "`kaiming_fan_out` (W1: kaiming fan_out) starts W1 at std 0.118" in text
    assert "`torch_linear` (W1: torch_linear) starts W1 at std 0.105 and W2 at 0.0408" in text
    assert "(no different from `kaiming`'s" in text
    for k, s in enumerate(study.metrics["torch_linear"]["seeds"].values()):
        s["val_loss"] = 2.3 + 0.001 * k
    assert "higher than `kaiming`'s, p=0.000" in section(report(study), "Kaiming's other half")


# --- BatchNorm's side effects ----------------------------------------------------------------


def test_a_bias_before_batchnorm_gets_no_gradient_and_changes_no_loss(study):
    text = section(report(study), "BatchNorm's side effects")
    assert (
        "(the series' block means, every seed) is at most 2e-09, rounding, against at least "
        in text
    )
    assert "no difference beyond the seeds' noise (Welch's t-test p=1.000)" in text
    table = study.series["batchnorm_b1"]
    table.rows = [row[:3] + (0.5,) for row in table.rows]
    for s in study.metrics["batchnorm_b1"]["seeds"].values():
        s["val_loss"] += 0.5
    text = section(report(study), "BatchNorm's side effects")
    assert (
        "yet b1's gradient norm reaches 0.5" in text and "higher (Welch's t-test p=0.000)" in text
    )


def test_running_momentum_says_which_statistics_end_closer(study):
    text = section(report(study), "BatchNorm: running vs calibrated")
    assert "`batchnorm_momentum_0_1` (momentum 0.1) 0.0240 in the mean" in text
    assert "Neither ends closer to the calibrated statistics in both" in text  # the same gaps
    for s in study.metrics["batchnorm_momentum_0_1"]["seeds"].values():
        s["calibrated_mean_max_abs_diff"] *= 5
        s["calibrated_std_max_rel_diff"] *= 5
    text = section(report(study), "BatchNorm: running vs calibrated")
    assert "`batchnorm_momentum_0_1`'s running statistics end further from the calibrated" in text
    for s in study.metrics["batchnorm_momentum_0_1"]["seeds"].values():
        s["calibrated_mean_max_abs_diff"] /= 50
        s["calibrated_std_max_rel_diff"] /= 50
    text = section(report(study), "BatchNorm: running vs calibrated")
    assert "`batchnorm_momentum_0_1`'s running statistics end closer to the calibrated" in text


def test_the_train_val_gap_with_and_without_batchnorm(study):
    for s in study.metrics["batchnorm"]["seeds"].values():
        s["train_loss"] = s["val_loss"] - 0.01
    text = section(report(study), "BatchNorm's side effects")
    assert "With BatchNorm the gap is lower (Welch's t-test p=" in text
    assert "a noise that regularises" in text
    for s in study.metrics["batchnorm"]["seeds"].values():
        s["train_loss"] = s["val_loss"] - 0.2
    text = section(report(study), "BatchNorm's side effects")
    assert "With BatchNorm the gap is higher" in text and "regularises" not in text


def test_the_gain_moves_the_update_ratios_not_the_activations(study):
    text = section(report(study), "BatchNorm's side effects")
    assert "as the gain goes 0.2 → 1 → 1.67 → 5" in text
    assert "by at most 0.000 in any layer at init" in text
    assert "BatchNorm divides each unit by its batch std and so undoes the weights' scale" in text
    assert "goes -1.50 → -2.40 → -2.80 → -3.70, falling as the gain grows" in text
    study.deep["batchnorm_gain_5"] = deep_metrics(study.params, "batchnorm_gain_5", std=0.9)
    text = section(report(study), "BatchNorm's side effects")
    assert "by at most 0.250 in any layer at init" in text
    assert "the gain shows in the activations even through BatchNorm" in text
    assert "-2.80 → -2.70, not steadily with the gain" in text


def test_batchnorm_without_fan_in_and_its_larger_lr(study):
    text = section(report(study), "BatchNorm's side effects")
    assert "√30 = 5.48 times larger in the first layer and √100 = 10 in the others" in text
    assert "BatchNorm undoes that going forward" in text and "Not in the update" in text
    assert "is -4.80 against -2.80" in text
    assert (
        "With lr 1 instead of 0.1 (10×), `batchnorm_no_fan_in_lr_1`'s update:data is -3.50 (+1.30)"
        in text
    )


# --- the deep network miscalibrated -------------------------------------------------------------


def test_a_learning_rate_far_too_low_and_a_forgotten_fan_in(study):
    text = section(report(study), "The deep network miscalibrated")
    assert "`tanh_lr_0_001` (sgd lr 0.001): update:data -5.30, 2.3 or more below -3" in text
    assert (
        "90.0% of its tanh units saturated at init, more than any layer of `tanh_gain_5_3`" in text
    )
    per_layer = study.deep["tanh_no_fan_in"]
    for s in per_layer["seeds"].values():
        s["update_ratio_log10"] |= {"W1": -1.2, "W5": -3.8}
    text = section(report(study), "The deep network miscalibrated")
    assert "spread over 2.6 decades from layer to layer (fastest: layer 1)" in text
    study.deep["tanh_lr_0_001"] = deep_metrics(study.params, "tanh_lr_0_001", ratio=-2.5)
    text = section(report(study), "The deep network miscalibrated")
    assert "update:data -2.50, 0.5 or more above -3" in text


def test_the_deep_tables_give_mean_and_sd_over_the_deep_seeds(study, params):
    n = len(params.deep_train.seeds)
    text = section(report(study), "6. The deep network")
    m = study.deep["notebook"]
    vals = mean_sd([s["val_loss"] for s in m["seeds"].values()])
    assert re.search(rf"^\| notebook .*\| {re.escape(vals)} +\|", text, re.M)
    assert f"val mean ± sd (n={n})" in text
    assert re.search(r"^\| linear_gain_5_3 +\| sgd +\| diverged at step 6 .*\|  +\|$", text, re.M)


def test_batchnorm_without_fan_in_is_said_undone_only_where_its_numbers_show_it(study):
    study.deep["batchnorm_no_fan_in"] = deep_metrics(
        study.params, "batchnorm_no_fan_in", ratio=-2.9, std=0.9
    )
    text = section(report(study), "BatchNorm's side effects")
    assert "BatchNorm does not undo that: the hidden layers' output std at init is 0.900" in text
    assert "The update: the hidden weights' last log10 update:data" in text
