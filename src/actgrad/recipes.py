"""The study's recipes in params.yaml: the MLP's training and variants, calibrate and fold, the
deep network's training and configs, and what the report shows; `read_params` checks the whole
file at once.

A variant or deep config is data: the pieces it is made of (pieces/), each with its own params.
"""

import re
from typing import Annotated

from pydantic import Field, field_serializer, field_validator, model_validator

from .errors import ParamsError
from .params import DataParams, Section, SplitParams, invalid, read_values, validate
from .pieces import Activation, Init, Norm, Optimizer
from .pieces.activations import Tanh
from .pieces.inits import Randn
from .pieces.norms import NoNorm

Positive = Annotated[int, Field(gt=0)]
TENSORS = ("C", "W1", "b1", "W2", "b2")  # drawn in this order from each seed's generator
RANDN = Randn(scale=1.0)  # a tensor that init leaves out
NAME = re.compile(r"[A-Za-z0-9_-]+")  # a variant's or deep config's name: part of stage names


class TrainParams(Section):
    """How every variant trains: its sizes, steps and default optimizer, what is recorded on the
    way, and the seeds (the first is the lecture's, reported on its own)."""

    n_embd: Positive
    n_hidden: Positive
    steps: Positive
    batch_size: int = Field(ge=2)  # BatchNorm needs a batch std
    optimizer: Optimizer  # a variant's own optimizer replaces it
    curve_every: Positive  # the loss curve is the mean of each block of this many steps
    max_loss: float = Field(gt=0)  # a minibatch loss above this (or NaN/inf): diverged
    ratio_every: Positive  # update:data ratios and gradient norms every this many steps
    units_every: Positive  # dead and distinct hidden units every this many steps
    samples: Positive  # names sampled from the lecture seed's model
    sample_seed: int = Field(ge=0)
    seeds: tuple[int, ...]

    @field_validator("seeds")
    @classmethod
    def _distinct(cls, seeds):
        if not seeds or len(set(seeds)) != len(seeds) or min(seeds) < 0:
            raise ValueError(
                f"must be a non-empty list of distinct integers >= 0, got {list(seeds)}"
            )
        return seeds

    @model_validator(mode="after")
    def _units_on_the_curve(self):
        if self.units_every % self.curve_every:
            raise invalid(
                "units_every",
                f"must be a multiple of train.curve_every ({self.curve_every}), "
                f"got {self.units_every}",
            )
        return self


class Variant(Section):
    """An MLP recipe: how each tensor starts, the activation, the norm after the first Linear
    and the optimizer (None: train.optimizer). A tensor missing from init is randn × 1."""

    init: dict[str, Init] = Field(default_factory=dict)
    activation: Activation = Tanh()
    norm: Norm = NoNorm()
    optimizer: Optimizer | None = None

    @field_serializer("init")
    def _init_in_words(self, init):
        """Each tensor's scheme in words, "randn x 0.01", as MLflow's params show it."""
        return {name: str(scheme) for name, scheme in init.items()}

    @model_validator(mode="after")
    def _tensors_it_has(self):
        for name, scheme in self.init.items():
            if name not in TENSORS:
                raise invalid(
                    f"init.{name}", f"unknown tensor; the tensors are {', '.join(TENSORS)}"
                )
            if name == "b1" and self.batchnorm:
                raise invalid(
                    "init.b1",
                    f"a {self.norm.name} variant has no b1 (the norm's bias replaces it); "
                    "remove it",
                )
            if scheme.name == "kaiming" and scheme.gain is None and self.gain_of(name) is None:
                raise invalid(
                    f"init.{name}",
                    f"{self.activation.name} has no standard kaiming gain; give one, e.g. "
                    "{kaiming: {gain: 1.4142}}",
                )
        return self

    @property
    def batchnorm(self):
        """BatchNorm after the first Linear: its bias replaces b1, it keeps running statistics."""
        return self.norm.name == "batchnorm"

    @property
    def normed(self):
        """A norm with a gain and a bias (norm_gain, norm_bias) follows the first Linear."""
        return self.norm.name != "none"

    @property
    def tensors(self):
        """The tensors this variant draws, in the generator's order."""
        return tuple(t for t in TENSORS if t != "b1" or not self.batchnorm)

    def init_of(self, name):
        return self.init.get(name, RANDN)

    def gain_of(self, name):
        """The activation's gain for the first layer (W1, b1); 1 for the linear C, W2 and b2."""
        return self.activation.gain if name in ("W1", "b1") else 1.0


class CalibrateParams(Section):
    variant: str  # the BatchNorm variant whose statistics are calibrated and folded


class FoldParams(Section):
    """BatchNorm folded into the Linear before it (the lecture's exercise E02)."""

    tolerance: float = Field(gt=0)  # the largest |logit difference| allowed on the val split
    repeats: Positive  # timed inference passes over the val split, each model


class DeepConfig(Section):
    """One deep-network recipe: the activation after each hidden Linear, BatchNorm or not, how
    the weights are scaled, and the optimizer (None: deep_train.optimizer)."""

    activation: Activation = Tanh()
    batchnorm: bool = False  # a BatchNorm1d after every Linear, the output one included
    gain: float = Field(gt=0)  # multiplies every hidden Linear's randn / sqrt(fan_in) weight
    last_scale: float = Field(gt=0)  # the output BatchNorm's gamma, or without it its weight
    optimizer: Optimizer | None = None


class DeepTrainParams(Section):
    """Settings every deep-network config shares."""

    n_embd: Positive
    n_hidden: Positive
    n_layers: Positive
    steps: Positive  # the notebook breaks after the update of step i = 1000
    batch_size: int = Field(ge=2)
    optimizer: Optimizer
    bn_momentum: float = Field(gt=0, le=1)
    bn_eps: float = Field(gt=0)
    jacobian_examples: Positive  # the fixed batch whose input-output Jacobians are measured
    seed: int = Field(ge=0)
    sample_seed: int = Field(ge=0)  # names drawn from a trained net (actgrad sample deep/...)


class ReportParams(Section):
    """What the report shows: the lecture's rows, what each other variant and deep config is
    set against, and the variants that answer the exercises."""

    lecture: tuple[str, ...] = ()
    compare: dict[str, str] = Field(default_factory=dict)  # variant: the one it changes
    deep_compare: dict[str, str] = Field(default_factory=dict)  # deep config: the same, SGD
    zero_init: str | None = None  # E01: all weights and biases zero
    symmetry: tuple[str, ...] = ()  # constant init, then the same with one random tensor


class Params(Section):
    """The whole of params.yaml."""

    data: DataParams
    split: SplitParams
    train: TrainParams
    variants: dict[str, Variant]
    calibrate: CalibrateParams
    fold: FoldParams
    deep: dict[str, DeepConfig] = Field(default_factory=dict)
    deep_train: DeepTrainParams
    report: ReportParams

    @field_validator("variants", "deep")
    @classmethod
    def _names(cls, recipes, info):
        if info.field_name == "variants" and not recipes:
            raise ValueError("must define at least one variant")
        for name in recipes:
            if not NAME.fullmatch(name):
                raise invalid(name, "a name may hold only letters, digits, _ and -")
        return recipes

    @model_validator(mode="after")
    def _names_it_uses(self):
        name = self.calibrate.variant
        if name not in self.variants:
            raise invalid(
                "calibrate.variant",
                f"{name!r} is not a variant; choose one of {sorted(self.variants)}",
            )
        if not self.variants[name].batchnorm:
            normed = sorted(n for n, v in self.variants.items() if v.batchnorm)
            raise invalid("calibrate.variant", f"{name!r} has no BatchNorm; choose one of {normed}")
        report = self.report
        uses = [(f"report.lecture[{i}]", n) for i, n in enumerate(report.lecture)]
        uses += [(f"report.symmetry[{i}]", n) for i, n in enumerate(report.symmetry)]
        uses += [
            (f"report.compare.{n}", m) for n, other in report.compare.items() for m in (n, other)
        ]
        uses += [("report.zero_init", report.zero_init)] if report.zero_init else []
        for key, name in uses:
            if name not in self.variants:
                raise invalid(key, f"{name!r} is not a variant")
        for name, other in report.deep_compare.items():
            for config in (name, other):
                if config not in self.deep:
                    raise invalid(f"report.deep_compare.{name}", f"{config!r} is not a deep config")
        return self

    def variant(self, name):
        """The variant called `name`, its optimizer train.optimizer unless its own."""
        if name not in self.variants:
            raise ParamsError(
                f"variants.{name}: no such variant; choose one of {sorted(self.variants)}"
            )
        recipe = self.variants[name]
        return recipe.model_copy(update={"optimizer": recipe.optimizer or self.train.optimizer})

    def deep_config(self, name):
        """The deep config called `name`, its optimizer deep_train.optimizer unless its own."""
        if name not in self.deep:
            raise ParamsError(f"deep.{name}: no such config; choose one of {sorted(self.deep)}")
        config = self.deep[name]
        return config.model_copy(
            update={"optimizer": config.optimizer or self.deep_train.optimizer}
        )


def load_params(values):
    """The whole params.yaml mapping, validated."""
    if not isinstance(values, dict):
        raise ParamsError(f"params.yaml: expected a mapping of sections, got {values!r}")
    return validate(Params, values, "")


def read_params(path="params.yaml"):
    """params.yaml, validated as a whole."""
    return load_params(read_values(path))
