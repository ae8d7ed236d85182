"""params.yaml's schema (src/actgrad/config.py), in this process: every bad value is one
ParamsError naming its key and what the key accepts. docs/troubleshooting.md's rows run some of
these through the real stages (tests/test_failures.py)."""

import copy

import pytest
import yaml
from conftest import ROOT

from actgrad.errors import ParamsError
from actgrad.recipes import load_params

PARAMS = yaml.safe_load((ROOT / "params.yaml").read_text())


def with_param(key, value):
    """params.yaml's values with a dotted key ("train.steps", "trian") set to `value`."""
    values = copy.deepcopy(PARAMS)
    *parents, name = key.split(".")
    section = values
    for parent in parents:
        section = section[parent]
    section[name] = value
    return values


BAD_PARAMS = [  # (key, value, the stage that reads it, the message): more than the docs' table
    ("train.batch_size", 0, "train", "train.batch_size: must be an integer >= 2, got 0"),
    (
        "train.batch_size",
        1,
        "train",
        "train.batch_size: must be an integer >= 2, got 1",
    ),
    ("train.optimizer.lr", -0.1, "train", "train.optimizer.lr: must be a number > 0, got -0.1"),
    ("train.n_hidden", 0, "train", "train.n_hidden: must be an integer > 0, got 0"),
    ("train.steps", "many", "train", "train.steps: expected an integer, got 'many'"),
    (
        "train.seeds",
        [1, 1],
        "train",
        "train.seeds: must be a non-empty list of distinct integers >= 0, got [1, 1]",
    ),
    (
        "train.units_every",
        1500,
        "train",
        "train.units_every: must be a multiple of train.curve_every (1000), got 1500",
    ),
    (
        "train.optimizer.decayed_lr",
        None,
        "train",
        "train.optimizer.decayed_lr: must be a number > 0 when decay_step is set, got None",
    ),
    (
        "train.optimizer.momentum",
        0.9,
        "train",
        "train.optimizer.momentum: unknown key; allowed keys are name, lr, decay_step, decayed_lr",
    ),
    (
        "variants.adam.optimizer.name",
        "adagrad",
        "train",
        "variants.adam.optimizer.name: unknown optimizer 'adagrad'; "
        "choose one of sgd, momentum, adam, lars",
    ),
    (
        "variants.adam.optimizer.beta1",
        1.0,
        "train",
        "variants.adam.optimizer.beta1: must be a number < 1, got 1.0",
    ),
    (
        "variants.kaiming.norm",
        "yes",
        "train",
        "variants.kaiming.norm: unknown norm 'yes'; choose one of none, batchnorm, layernorm",
    ),
    (
        "variants.kaiming.activation",
        {"name": "leaky_relu", "slope": 1.5},
        "train",
        "variants.kaiming.activation.slope: must be a number < 1, got 1.5",
    ),
    (
        "variants.kaiming.init.W1",
        {"kaiming": {"gian": 1}},
        "train",
        "variants.kaiming.init.W1.kaiming.gian: unknown key; allowed keys are gain, mode",
    ),
    (
        "variants.kaiming.init.W1",
        "he",
        "train",
        "variants.kaiming.init.W1: unknown init scheme 'he'; choose one of randn, kaiming, "
        "xavier, torch_linear, zeros, constant",
    ),
    (
        "variants.kaiming.activation",
        "gelu",
        "train",
        "variants.kaiming.init.W1: gelu has no standard kaiming gain; give one, "
        "e.g. {kaiming: {gain: 1.4142}}",
    ),
    (
        "trian",
        {"steps": 300},
        "train",
        "trian: unknown key; allowed keys are data, split, train, variants, calibrate, fold, "
        "deep, deep_train, demos, tour, report",
    ),
    ("split.block_size", 0, "split", "split.block_size: must be an integer >= 1, got 0"),
    ("data.sha256", "abc", "download", "data.sha256: expected 64 lowercase hex digits, got 'abc'"),
    ("fold.tolerance", 0, "fold", "fold.tolerance: must be a number > 0, got 0"),
    (
        "deep.batchnorm.batchnorm",
        "yes",
        "deep",
        "deep.batchnorm.batchnorm: expected true or false, got 'yes'",
    ),
    (
        "deep.batchnorm.activation",
        "swish",
        "deep",
        "deep.batchnorm.activation: unknown activation 'swish'; "
        "choose one of tanh, sigmoid, relu, leaky_relu, elu, gelu, linear",
    ),
    ("deep_train.bn_momentum", 0, "deep", "deep_train.bn_momentum: must be a number > 0, got 0"),
    ("report.compare.adam", "nope", "train", "report.compare.adam: 'nope' is not a variant"),
]


@pytest.mark.parametrize("key, value, stage, message", BAD_PARAMS)
def test_a_bad_param_is_one_error_naming_it(key, value, stage, message):
    with pytest.raises(ParamsError) as e:
        load_params(with_param(key, value))
    assert str(e.value) == message


def test_the_studys_own_params_are_valid():
    params = load_params(PARAMS)
    assert len(params.variants) == 21 and len(params.deep) == 19
    assert params.variants["adam"].optimizer.name == "adam"
    assert params.variant("kaiming").optimizer == params.train.optimizer  # its default
