"""Every knob of the study as plain frozen dataclasses, validated from params.yaml.

The schema is data: it knows an activation, a norm or an optimizer by its name and its
hyperparameters only (a `Piece`), checked against the catalogue below. Their math lives in
pieces.py and optim.py, which build a piece by its name where it is used, so that editing the
math never touches what the data stages depend on. Validation is strict: an unknown key or
name, a wrong type or an impossible value raises ParamsError naming the key and what it accepts.
"""

import dataclasses
import math
import re
import types
import typing
from dataclasses import dataclass, field
from typing import Annotated


class ParamsError(ValueError):
    """A params.yaml value is missing, unknown or out of range."""


def _require_positive(config, key, names):
    """Raise ParamsError for the first of the fields `names` of `config` that is not > 0."""
    for name in names:
        value = getattr(config, name)
        if not value > 0:
            kind = "an integer" if isinstance(value, int) else "a number"
            raise ParamsError(f"{key}.{name}: must be {kind} > 0, got {value}")


def _convert(value, tp, key):
    """Check `value` against the annotation `tp`; return it in that type."""
    origin = typing.get_origin(tp)
    if origin is typing.Annotated:
        return tp.__metadata__[0](value, key)
    if dataclasses.is_dataclass(tp):
        return build(tp, value, key)
    if origin is dict:
        if not isinstance(value, dict):
            raise ParamsError(f"{key}: expected a mapping, got {value!r}")
        _, value_tp = typing.get_args(tp)
        return {str(k): _convert(v, value_tp, f"{key}.{k}") for k, v in value.items()}
    if origin is tuple:
        args = typing.get_args(tp)
        if not isinstance(value, list | tuple):
            raise ParamsError(f"{key}: expected a list, got {value!r}")
        if args[-1] is Ellipsis:
            return tuple(_convert(v, args[0], f"{key}[{i}]") for i, v in enumerate(value))
        if len(value) != len(args):
            raise ParamsError(f"{key}: expected a list of {len(args)} items, got {value!r}")
        return tuple(_convert(v, a, f"{key}[{i}]") for i, (v, a) in enumerate(zip(value, args)))
    if origin in (typing.Union, types.UnionType):
        args = typing.get_args(tp)
        if value is None and type(None) in args:
            return None
        return _convert(value, next(a for a in args if a is not type(None)), key)
    if tp is bool:
        if not isinstance(value, bool):
            raise ParamsError(f"{key}: expected true or false, got {value!r}")
        return value
    if tp is int:
        if isinstance(value, bool) or not isinstance(value, int):
            raise ParamsError(f"{key}: expected an integer, got {value!r}")
        return value
    if tp is float:
        if isinstance(value, bool) or not isinstance(value, int | float):
            raise ParamsError(f"{key}: expected a number, got {value!r}")
        return float(value)
    if tp is str:
        if not isinstance(value, str):
            raise ParamsError(f"{key}: expected a string, got {value!r}")
        return value
    raise TypeError(f"unsupported annotation {tp}")


def build(cls, values, key=""):
    """Build dataclass `cls` from a mapping, rejecting unknown keys, wrong types and values a
    class's validate() refuses."""
    if values is None:
        values = {}
    if not isinstance(values, dict):
        raise ParamsError(f"{key or 'params'}: expected a mapping, got {values!r}")
    hints = typing.get_type_hints(cls, include_extras=True)
    names = [f.name for f in dataclasses.fields(cls)]
    for name in values:
        if name not in names:
            where = f"{key}.{name}" if key else str(name)
            raise ParamsError(f"{where}: unknown key; allowed keys are {', '.join(names)}")
    kwargs = {
        name: _convert(values[name], hints[name], f"{key}.{name}" if key else name)
        for name in names
        if name in values
    }
    obj = cls(**kwargs)
    if hasattr(obj, "validate"):
        obj.validate(key)
    return obj


# --- the pieces params.yaml can name ----------------------------------------------------------


@dataclass(frozen=True)
class Hyper:
    """One hyperparameter of a piece: its type (`cast`), its default (None: unset) and the values it
    takes, as "[0, 1)", "(0, 1]", "> 0" or ">= 0"."""

    default: float | int | None
    rule: str
    cast: type = float

    def check(self, value, key):
        low, high = self._bounds()
        strict = self.rule[0] == "(" or self.rule.startswith("> ")
        ok = value > low if strict else value >= low
        if high is not None:
            ok = ok and (value < high if self.rule[-1] == ")" else value <= high)
        if not ok:
            kind = "an integer" if self.cast is int else "a number"
            rule = f"in {self.rule}" if high is not None else f"{kind} {self.rule}"
            raise ParamsError(f"{key}: must be {rule}, got {value}")

    def _bounds(self):
        if self.rule[0] in "[(":
            low, high = self.rule[1:-1].split(",")
            return float(low), float(high)
        return float(self.rule.split()[1]), None


SCHEDULE = {  # every optimizer's: lr until step decay_step, then decayed_lr
    "lr": Hyper(0.1, "> 0"),
    "decay_step": Hyper(None, ">= 0", int),
    "decayed_lr": Hyper(None, "> 0"),
}
ACTIVATIONS = {
    "tanh": {},
    "sigmoid": {},
    "relu": {},
    "leaky_relu": {"slope": Hyper(0.01, "[0, 1)")},
    "elu": {"alpha": Hyper(1.0, "> 0")},
    "gelu": {},
    "linear": {},
}
NORMS = {  # after the first Linear; BatchNorm's bias replaces b1
    "none": {},
    "batchnorm": {"momentum": Hyper(0.001, "(0, 1]")},
    "layernorm": {"eps": Hyper(1e-5, "> 0")},
}
OPTIMIZERS = {
    "sgd": SCHEDULE,
    "momentum": SCHEDULE | {"momentum": Hyper(0.9, "[0, 1)")},
    "adam": SCHEDULE
    | {
        "lr": Hyper(0.001, "> 0"),
        "beta1": Hyper(0.9, "[0, 1)"),
        "beta2": Hyper(0.999, "[0, 1)"),
        "eps": Hyper(1e-8, "> 0"),
    },
    "lars": SCHEDULE
    | {
        "trust": Hyper(0.001, "> 0"),
        "momentum": Hyper(0.9, "[0, 1)"),
        "weight_decay": Hyper(0.0, ">= 0"),
    },
}
KINDS = {"activation": ACTIVATIONS, "norm": NORMS, "optimizer": OPTIMIZERS}


@dataclass(frozen=True)
class Piece:
    """An activation, norm or optimizer of params.yaml: its name and every hyperparameter."""

    name: str
    options: tuple[tuple[str, float | int | None], ...] = ()

    def __getattr__(self, option):  # piece.lr, piece.slope: a hyperparameter by its name
        for key, value in vars(self).get("options", ()):
            if key == option:
                return value
        raise AttributeError(option)

    @property
    def kwargs(self):
        return dict(self.options)

    def replace(self, **changes):
        """This piece with some hyperparameters changed (unchecked: for tests and benches)."""
        return Piece(self.name, tuple((self.kwargs | changes).items()))


def piece(kind, value, key=""):
    """A Piece of `kind` from params.yaml: its name alone, or {name: name, hyperparameter: v}."""
    catalogue = KINDS[kind]
    values = {"name": value} if isinstance(value, str) else value
    if not isinstance(values, dict) or not isinstance(values.get("name"), str):
        raise ParamsError(f"{key}: expected {kind} name, or a mapping with a name, got {value!r}")
    name = values["name"]
    if name not in catalogue:
        raise ParamsError(
            f"{key}.name: unknown {kind} {name!r}; choose one of {', '.join(catalogue)}"
        )
    hypers = catalogue[name]
    for option in values:
        if option != "name" and option not in hypers:
            allowed = ", ".join(["name", *hypers])
            raise ParamsError(f"{key}.{option}: unknown key; allowed keys are {allowed}")
    options = {}
    for option, hyper in hypers.items():
        value = _convert(values.get(option, hyper.default), hyper.cast | None, f"{key}.{option}")
        if value is not None:
            hyper.check(value, f"{key}.{option}")
        options[option] = value
    if options.get("decay_step") is not None and options["decayed_lr"] is None:
        raise ParamsError(
            f"{key}.decayed_lr: must be a number > 0 when decay_step is set, got None"
        )
    return Piece(name, tuple(options.items()))


def kaiming_gain(activation):
    """torch.nn.init.calculate_gain's gain of an activation Piece, or None where it has none."""
    gains = {"tanh": 5 / 3, "sigmoid": 1.0, "relu": math.sqrt(2), "linear": 1.0}
    if activation.name == "leaky_relu":
        return math.sqrt(2 / (1 + activation.slope**2))
    return gains.get(activation.name)


# --- the MLP's recipes --------------------------------------------------------------------------


@dataclass(frozen=True)
class DataConfig:
    url: str = "https://raw.githubusercontent.com/karpathy/makemore/master/names.txt"
    sha256: str = "0a30b5557f192f32ab962680889aac5f6fda0f4cecf40a6d0b5694f58ea8cc4d"

    def validate(self, key):
        if len(self.sha256) != 64 or any(c not in "0123456789abcdef" for c in self.sha256):
            raise ParamsError(
                f"{key}.sha256: expected 64 lowercase hex digits, got {self.sha256!r}"
            )


@dataclass(frozen=True)
class SplitConfig:
    block_size: int = 3
    shuffle_seed: int = 42
    fractions: tuple[float, float, float] = (0.8, 0.1, 0.1)

    def validate(self, key):
        if self.block_size < 1:
            raise ParamsError(f"{key}.block_size: must be an integer >= 1, got {self.block_size}")
        if any(f <= 0 for f in self.fractions) or not math.isclose(sum(self.fractions), 1.0):
            raise ParamsError(
                f"{key}.fractions: three positive fractions (train, val, test) summing to 1, "
                f"got {list(self.fractions)}"
            )


TENSORS = ("C", "W1", "b1", "W2", "b2")  # drawn in this order from each seed's generator
INIT_SCHEMES = ("kaiming", "xavier", "zeros")  # the schemes named by a bare word


@dataclass(frozen=True)
class Init:
    """How one tensor starts. Every scheme first draws randn from the seed's generator:
    randn × value, kaiming (randn × gain / √fan_in), xavier (randn × gain × √(2 / (fan_in +
    fan_out))), zeros, or constant (value everywhere). A kaiming gain of None is the
    activation's; a xavier one, 1."""

    scheme: str
    value: float | None = None

    def __str__(self):
        if self.scheme == "randn":
            return f"randn x {self.value:g}"
        return self.scheme if self.value is None else f"{self.scheme} {self.value:g}"


def parse_init(value, key):
    """An Init from params.yaml: a number, kaiming, xavier, zeros, {kaiming: {gain: g}},
    {xavier: {gain: g}} or {constant: v}."""
    if isinstance(value, bool):
        raise ParamsError(f"{key}: expected a number or a scheme, got {value!r}")
    if isinstance(value, int | float):
        return Init("randn", float(value))
    if value in INIT_SCHEMES:
        return Init(value)
    if isinstance(value, dict) and len(value) == 1:
        ((scheme, arg),) = value.items()
        if scheme == "constant":
            return Init("constant", _convert(arg, float, f"{key}.constant"))
        if scheme in ("kaiming", "xavier"):
            gain = build(Gain, arg, f"{key}.{scheme}").gain
            return Init(scheme, gain)
    raise ParamsError(
        f"{key}: expected a number (randn scale), kaiming, xavier, zeros, "
        f"{{kaiming: {{gain: g}}}}, {{xavier: {{gain: g}}}} or {{constant: v}}, got {value!r}"
    )


@dataclass(frozen=True)
class Gain:
    gain: float

    def validate(self, key):
        _require_positive(self, key, ("gain",))


def _parser(kind):
    return lambda value, key: piece(kind, value, key)


Activation = Annotated[Piece, _parser("activation")]
Norm = Annotated[Piece, _parser("norm")]
Optimizer = Annotated[Piece, _parser("optimizer")]
InitSpec = Annotated[Init, parse_init]


@dataclass(frozen=True)
class Variant:
    """An MLP recipe: how each tensor starts, the activation, the norm after the first Linear,
    and the optimizer (None: train.optimizer). A tensor missing from init is randn × 1."""

    init: dict[str, InitSpec] = field(default_factory=dict)
    activation: Activation = piece("activation", "tanh")
    norm: Norm = piece("norm", "none")
    optimizer: Optimizer | None = None

    def validate(self, key):
        for name in self.init:
            if name not in TENSORS:
                raise ParamsError(
                    f"{key}.init.{name}: unknown tensor; the tensors are {', '.join(TENSORS)}"
                )
        if "b1" in self.init and self.batchnorm:
            raise ParamsError(
                f"{key}.init.b1: a {self.norm.name} variant has no b1 (the norm's bias "
                "replaces it); remove it"
            )
        for name, spec in self.init.items():
            if spec.scheme == "kaiming" and spec.value is None and self.gain_of(name) is None:
                raise ParamsError(
                    f"{key}.init.{name}: {self.activation.name} has no standard kaiming gain; "
                    "give one, e.g. {kaiming: {gain: 1.4142}}"
                )

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
        return self.init.get(name, Init("randn", 1.0))

    def gain_of(self, name):
        """The activation's gain for the first layer (W1, b1); 1 for the linear C, W2 and b2."""
        return kaiming_gain(self.activation) if name in ("W1", "b1") else 1.0


LECTURE_OPTIMIZER = piece("optimizer", {"name": "sgd", "decay_step": 100_000, "decayed_lr": 0.01})


@dataclass(frozen=True)
class TrainConfig:
    n_embd: int = 10
    n_hidden: int = 200
    steps: int = 200_000
    batch_size: int = 32
    optimizer: Optimizer = LECTURE_OPTIMIZER  # a variant's own optimizer replaces it
    curve_every: int = 1000
    max_loss: float = 100.0  # a minibatch loss above this (or NaN/inf) stops training
    ratio_every: int = 100  # record update:data ratios and gradient norms every this many steps
    units_every: int = 10_000  # count dead and distinct hidden units every this many steps
    samples: int = 20  # names sampled from the trained model (lecture seed)
    sample_seed: int = 2147483657
    seeds: tuple[int, ...] = (2147483647,)

    def validate(self, key):
        positive = ("n_embd", "n_hidden", "steps", "batch_size", "curve_every", "ratio_every")
        _require_positive(self, key, positive + ("units_every", "samples", "max_loss"))
        if self.batch_size < 2:
            raise ParamsError(
                f"{key}.batch_size: must be an integer >= 2 (BatchNorm needs a batch std), "
                f"got {self.batch_size}"
            )
        if not self.seeds or len(set(self.seeds)) != len(self.seeds) or min(self.seeds) < 0:
            raise ParamsError(
                f"{key}.seeds: must be a non-empty list of distinct integers >= 0, "
                f"got {list(self.seeds)}"
            )
        if self.units_every % self.curve_every:
            raise ParamsError(
                f"{key}.units_every: must be a multiple of {key}.curve_every "
                f"({self.curve_every}), got {self.units_every}"
            )


@dataclass(frozen=True)
class CalibrateConfig:
    variant: str = "batchnorm"


@dataclass(frozen=True)
class FoldConfig:
    """Fold the calibrated BatchNorm into the Linear before it (the lecture's exercise E02)."""

    tolerance: float = 1e-5  # the largest |logit difference| allowed on the val split
    repeats: int = 20  # timed inference passes over the val split, each model

    def validate(self, key):
        _require_positive(self, key, ("tolerance", "repeats"))


# --- the deep network's recipes -------------------------------------------------------------


@dataclass(frozen=True)
class DeepConfig:
    """One deep-network recipe: the activation after each hidden Linear, BatchNorm or not, how
    the weights are scaled, and the optimizer (None: deep_train.optimizer)."""

    activation: Activation = piece("activation", "tanh")
    batchnorm: bool = False  # a BatchNorm1d after every Linear, the output one included
    gain: float = 5 / 3  # multiplies every hidden Linear's randn / sqrt(fan_in) weight
    last_scale: float = 0.1  # the output BatchNorm's gamma, or without BatchNorm its weight
    optimizer: Optimizer | None = None

    def validate(self, key):
        _require_positive(self, key, ("gain", "last_scale"))


@dataclass(frozen=True)
class DeepTrainConfig:
    """Settings every deep-network config shares."""

    n_embd: int = 10
    n_hidden: int = 100
    n_layers: int = 5
    steps: int = 1001  # the notebook breaks after the update of step i = 1000
    batch_size: int = 32
    optimizer: Optimizer = piece("optimizer", "sgd")
    bn_momentum: float = 0.1
    bn_eps: float = 1e-5
    jacobian_examples: int = 64  # the fixed batch whose input-output Jacobians are measured
    seed: int = 2147483647
    sample_seed: int = 2147483657  # names drawn from a trained net (actgrad sample deep/...)

    def validate(self, key):
        positive = ("n_embd", "n_hidden", "n_layers", "steps", "bn_eps", "jacobian_examples")
        _require_positive(self, key, positive)
        if self.batch_size < 2:
            raise ParamsError(f"{key}.batch_size: must be an integer >= 2, got {self.batch_size}")
        if not 0 < self.bn_momentum <= 1:
            raise ParamsError(f"{key}.bn_momentum: must be in (0, 1], got {self.bn_momentum}")
        for name in ("seed", "sample_seed"):
            if getattr(self, name) < 0:
                raise ParamsError(
                    f"{key}.{name}: must be an integer >= 0, got {getattr(self, name)}"
                )


@dataclass(frozen=True)
class ReportConfig:
    """What the report shows: the lecture's rows, what each other variant and deep config is
    set against, and the variants that answer the exercises."""

    lecture: tuple[str, ...] = ()
    compare: dict[str, str] = field(default_factory=dict)  # variant: the one it changes
    deep_compare: dict[str, str] = field(default_factory=dict)  # deep config: the same with SGD
    zero_init: str | None = None  # E01: all weights and biases zero
    symmetry: tuple[str, ...] = ()  # constant init, then the same with one random tensor


@dataclass(frozen=True)
class Params:
    data: DataConfig = field(default_factory=DataConfig)
    split: SplitConfig = field(default_factory=SplitConfig)
    train: TrainConfig = field(default_factory=TrainConfig)
    variants: dict[str, Variant] = field(default_factory=dict)
    calibrate: CalibrateConfig = field(default_factory=CalibrateConfig)
    fold: FoldConfig = field(default_factory=FoldConfig)
    deep: dict[str, DeepConfig] = field(default_factory=dict)
    deep_train: DeepTrainConfig = field(default_factory=DeepTrainConfig)
    report: ReportConfig = field(default_factory=ReportConfig)

    def validate(self, key):
        if not self.variants:
            raise ParamsError("variants: must define at least one variant")
        for section in ("variants", "deep"):
            for name in getattr(self, section):
                if not re.fullmatch(r"[A-Za-z0-9_-]+", name):
                    raise ParamsError(
                        f"{section}.{name}: a name may hold only letters, digits, _ and -"
                    )
        if self.calibrate.variant not in self.variants:
            raise ParamsError(
                f"calibrate.variant: {self.calibrate.variant!r} is not a variant; "
                f"choose one of {sorted(self.variants)}"
            )
        if not self.variants[self.calibrate.variant].batchnorm:
            raise ParamsError(
                f"calibrate.variant: {self.calibrate.variant!r} has no BatchNorm; choose one of "
                f"{sorted(n for n, v in self.variants.items() if v.batchnorm)}"
            )
        self._validate_report()

    def _validate_report(self):
        report = self.report
        names = [(f"report.lecture[{i}]", n) for i, n in enumerate(report.lecture)]
        names += [(f"report.symmetry[{i}]", n) for i, n in enumerate(report.symmetry)]
        names += [
            (f"report.compare.{n}", m) for n, other in report.compare.items() for m in (n, other)
        ]
        names += [("report.zero_init", report.zero_init)] if report.zero_init else []
        for key, name in names:
            if name not in self.variants:
                raise ParamsError(f"{key}: {name!r} is not a variant")
        for name, other in report.deep_compare.items():
            for config in (name, other):
                if config not in self.deep:
                    raise ParamsError(
                        f"report.deep_compare.{name}: {config!r} is not a deep config"
                    )

    def variant(self, name):
        """The variant called `name`; ParamsError naming the choices if there is none."""
        if name not in self.variants:
            raise ParamsError(
                f"variants.{name}: no such variant; choose one of {sorted(self.variants)}"
            )
        return self.variants[name]

    def deep_config(self, name):
        if name not in self.deep:
            raise ParamsError(f"deep.{name}: no such config; choose one of {sorted(self.deep)}")
        return self.deep[name]

    def resolved(self):
        """These params with every variant's and deep config's optimizer filled in."""
        return dataclasses.replace(
            self,
            variants={
                n: dataclasses.replace(v, optimizer=v.optimizer or self.train.optimizer)
                for n, v in self.variants.items()
            },
            deep={
                n: dataclasses.replace(d, optimizer=d.optimizer or self.deep_train.optimizer)
                for n, d in self.deep.items()
            },
        )


def plain(value):
    """Params as plain values, for the record: a piece as its name and hyperparameters, an
    Init in words."""
    if isinstance(value, Init):
        return str(value)
    if isinstance(value, Piece):
        return {"name": value.name, **value.kwargs}
    if dataclasses.is_dataclass(value):
        return {f.name: plain(getattr(value, f.name)) for f in dataclasses.fields(value)}
    if isinstance(value, dict):
        return {k: plain(v) for k, v in value.items()}
    return list(value) if isinstance(value, tuple) else value


def load_params(values):
    """Validate the whole params.yaml mapping; return Params, optimizers resolved."""
    return build(Params, values).resolved()
