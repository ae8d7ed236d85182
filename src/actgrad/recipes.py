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
    """An MLP recipe: how each tensor starts, the activation, the norm after the first Linear,
    the optimizer (None: train.optimizer) and the steps (None: train.steps), for a lesson that
    shows sooner. A tensor missing from init is randn × 1, but b1 beside BatchNorm, whose bias
    replaces it: there the variant has a b1 only if init names one."""

    init: dict[str, Init] = Field(default_factory=dict)
    activation: Activation = Tanh()
    norm: Norm = NoNorm()
    optimizer: Optimizer | None = None
    steps: int | None = Field(None, gt=0)

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
        return tuple(t for t in TENSORS if t != "b1" or not self.batchnorm or "b1" in self.init)

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
    fan_in_scaling: bool = True  # false: every Linear's weight randn, not randn / sqrt(fan_in)
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
    seeds: tuple[int, ...]  # each trains on its own; the first is the notebook's
    sample_seed: int = Field(ge=0)  # names drawn from a trained net (actgrad sample deep/...)

    @field_validator("seeds")
    @classmethod
    def _distinct(cls, seeds):
        return TrainParams._distinct(seeds)


class ProductParams(Section):
    """The lecture's `x @ w`: x (examples, fan_in) and w (fan_in, fan_out) from randn, w scaled
    by each of `scales`, then by 1/√fan_in and by gain/√fan_in."""

    examples: Positive
    fan_in: Positive
    fan_out: Positive
    scales: tuple[float, ...]
    gain: float = Field(gt=0)


class RegressionParams(Section):
    """Softmax regression on one-hot contexts, trained by minibatch SGD."""

    steps: Positive
    lr: float = Field(gt=0)
    batch_size: Positive


class DemosParams(Section):
    """The lecture's small demonstrations (stage demos), which train nothing or a softmax
    regression: the loss at init, W2's scale, `x @ w`, d2l 5.4's exercise 2."""

    confident: float = Field(gt=0)  # the 4-class toy's logit of the class it is sure of
    variant: str  # the recipe whose W2 is scaled at init (the lecture's baseline)
    w2_scales: tuple[float, ...]  # W2's scales at init, b2 zero
    x_w: ProductParams
    softmax_regression: RegressionParams


class TourParams(Section):
    """The learner's notebook (stage tour): its live miniature trains `variant` at the lecture
    seed for `steps` steps, the full run's first steps, batches and learning rate."""

    variant: str  # the recipe the miniature trains
    steps: Positive  # a few thousand: seconds


class ReportParams(Section):
    """What the report shows: the lecture's rows, what each other variant and deep config is
    set against, and the variants and deep configs that answer each question; a lesson whose
    names are left out is left out of the report."""

    lecture: tuple[str, ...] = ()
    compare: dict[str, str] = Field(default_factory=dict)  # variant: the one it changes
    # LARS config: the same stack with SGD, then with SGD's momentum alone
    deep_compare: dict[str, tuple[str, ...]] = Field(default_factory=dict)
    zero_init: str | None = None  # E01: all weights and biases zero
    symmetry: tuple[str, ...] = ()  # constant init, then the same with one random tensor
    embedding_symmetry: tuple[str, ...] = ()  # C and W1 constant, then C random
    dead_relus: tuple[str, ...] = ()  # ReLU, then other activations, on a b1 that kills
    kaiming_modes: tuple[str, ...] = ()  # kaiming's fan_in, its fan_out, torch's default
    bias_before_batchnorm: tuple[str, ...] = ()  # BatchNorm, then the same with a b1
    running_momentum: tuple[str, ...] = ()  # BatchNorm's momentum 0.001, then a larger one
    deep_batchnorm_gains: tuple[str, ...] = ()  # deep BatchNorm stacks at several gains
    deep_batchnorm_lr: tuple[str, ...] = ()  # fan-in scaled, not, not with a larger lr
    deep_miscalibrated: tuple[str, ...] = ()  # calibrated, then the lecture's two mistakes
    train_val_gap: tuple[str, ...] = ()  # without BatchNorm, then with it


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
    demos: DemosParams
    tour: TourParams
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
        if self.demos.variant not in self.variants:
            raise invalid("demos.variant", f"{self.demos.variant!r} is not a variant")
        if self.tour.variant not in self.variants:
            raise invalid("tour.variant", f"{self.tour.variant!r} is not a variant")
        for field in ReportParams.model_fields:
            kind, recipes = (
                ("deep config", self.deep) if "deep" in field else ("variant", self.variants)
            )
            for key, name in _names(getattr(self.report, field), f"report.{field}"):
                if name not in recipes:
                    raise invalid(key, f"{name!r} is not a {kind}")
        return self

    def variant(self, name):
        """The variant called `name`, its optimizer train.optimizer unless its own."""
        if name not in self.variants:
            raise ParamsError(
                f"variants.{name}: no such variant; choose one of {sorted(self.variants)}"
            )
        recipe = self.variants[name]
        return recipe.model_copy(update={"optimizer": recipe.optimizer or self.train.optimizer})

    def train_of(self, name):
        """train, with the variant's own steps if it has them."""
        steps = self.variant(name).steps
        return self.train.model_copy(update={"steps": steps}) if steps else self.train

    def deep_config(self, name):
        """The deep config called `name`, its optimizer deep_train.optimizer unless its own."""
        if name not in self.deep:
            raise ParamsError(f"deep.{name}: no such config; choose one of {sorted(self.deep)}")
        config = self.deep[name]
        return config.model_copy(
            update={"optimizer": config.optimizer or self.deep_train.optimizer}
        )


def _names(value, key):
    """(key, name) of each variant or deep config that a field of ReportParams names, the key
    down to a mapping's entry."""
    if isinstance(value, dict):
        return [
            pair
            for name, others in value.items()
            for pair in ((f"{key}.{name}", name), *_names(others, f"{key}.{name}"))
        ]
    names = value if isinstance(value, tuple) else (value,) if value else ()
    return [(key, name) for name in names]


def load_params(values):
    """The whole params.yaml mapping, validated."""
    if not isinstance(values, dict):
        raise ParamsError(f"params.yaml: expected a mapping of sections, got {values!r}")
    return validate(Params, values, "")


def read_params(path="params.yaml"):
    """params.yaml, validated as a whole."""
    return load_params(read_values(path))
