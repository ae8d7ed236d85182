"""Every knob of the study as dataclasses, validated from params.yaml.

Validation is strict: an unknown key, a wrong type or an impossible value raises
ParamsError naming the key and what it accepts.
"""

import dataclasses
import math
import re
import types
import typing
from dataclasses import dataclass, field


class ParamsError(ValueError):
    """A params.yaml value is missing, unknown or out of range."""


def _require_positive(config, key, names):
    """Raise ParamsError for the first of the fields `names` of `config` that is not > 0."""
    for name in names:
        value = getattr(config, name)
        if not value > 0:
            kind = "an integer" if isinstance(value, int) else "a number"
            raise ParamsError(f"{key}.{name}: must be {kind} > 0, got {value}")


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


@dataclass(frozen=True)
class Variant:
    """An init recipe: how each drawn tensor is scaled, and whether BatchNorm replaces b1."""

    w1_scale: float = 1.0
    w1_fan_in: bool = False  # also divide W1 by sqrt(fan_in), as Kaiming init does
    b1_scale: float = 1.0
    w2_scale: float = 1.0
    b2_scale: float = 1.0
    batchnorm: bool = False  # normalise the pre-activation; b1 is then neither drawn nor used


@dataclass(frozen=True)
class TrainConfig:
    n_embd: int = 10
    n_hidden: int = 200
    steps: int = 200_000
    batch_size: int = 32
    lr: float = 0.1
    lr_decay_step: int = 100_000
    lr_decayed: float = 0.01
    bn_momentum: float = 0.001
    curve_every: int = 1000
    max_loss: float = 100.0  # a minibatch loss above this (or NaN/inf) stops training
    ratio_every: int = 100  # record the weights' grad:data ratios every this many steps
    samples: int = 20  # names sampled from the trained model (lecture seed)
    sample_seed: int = 2147483657
    seeds: tuple[int, ...] = (2147483647,)

    def validate(self, key):
        positive = ("n_embd", "n_hidden", "steps", "batch_size", "curve_every", "ratio_every")
        _require_positive(self, key, positive + ("samples", "lr", "lr_decayed", "max_loss"))
        if self.batch_size < 2:
            raise ParamsError(
                f"{key}.batch_size: must be an integer >= 2 (BatchNorm needs a batch std), "
                f"got {self.batch_size}"
            )
        if self.lr_decay_step < 0:
            raise ParamsError(
                f"{key}.lr_decay_step: must be an integer >= 0, got {self.lr_decay_step}"
            )
        if not 0 < self.bn_momentum <= 1:
            raise ParamsError(f"{key}.bn_momentum: must be in (0, 1], got {self.bn_momentum}")
        if not self.seeds or len(set(self.seeds)) != len(self.seeds) or min(self.seeds) < 0:
            raise ParamsError(
                f"{key}.seeds: must be a non-empty list of distinct integers >= 0, "
                f"got {list(self.seeds)}"
            )

    def lr_at(self, step):
        return self.lr if step < self.lr_decay_step else self.lr_decayed


@dataclass(frozen=True)
class CalibrateConfig:
    variant: str = "batchnorm"


@dataclass(frozen=True)
class DeepConfig:
    """One deep-network recipe: which layers follow each Linear, and how the weights are scaled."""

    tanh: bool = True  # a Tanh after each hidden Linear (false: a purely linear stack)
    batchnorm: bool = False  # a BatchNorm1d after every Linear, the output one included
    gain: float = 5 / 3  # multiplies every hidden Linear's randn / sqrt(fan_in) weight
    last_scale: float = 0.1  # the output BatchNorm's gamma, or without BatchNorm its weight

    def validate(self, key):
        _require_positive(self, key, ("gain", "last_scale"))


@dataclass(frozen=True)
class DeepTrainConfig:
    """Settings every deep-network config shares."""

    n_embd: int = 10
    n_hidden: int = 100
    n_layers: int = 5
    steps: int = 1000
    batch_size: int = 32
    lr: float = 0.1
    seed: int = 2147483647

    def validate(self, key):
        _require_positive(self, key, ("n_embd", "n_hidden", "n_layers", "steps", "lr"))
        if self.batch_size < 2:
            raise ParamsError(f"{key}.batch_size: must be an integer >= 2, got {self.batch_size}")
        if self.seed < 0:
            raise ParamsError(f"{key}.seed: must be an integer >= 0, got {self.seed}")


@dataclass(frozen=True)
class Params:
    data: DataConfig = field(default_factory=DataConfig)
    split: SplitConfig = field(default_factory=SplitConfig)
    train: TrainConfig = field(default_factory=TrainConfig)
    variants: dict[str, Variant] = field(default_factory=dict)
    calibrate: CalibrateConfig = field(default_factory=CalibrateConfig)
    deep: dict[str, DeepConfig] = field(default_factory=dict)
    deep_train: DeepTrainConfig = field(default_factory=DeepTrainConfig)

    def validate(self, key):
        if not self.variants:
            raise ParamsError("variants: must define at least one variant")
        for name in self.variants:
            if not re.fullmatch(r"[A-Za-z0-9_-]+", name):
                raise ParamsError(
                    f"variants.{name}: a variant name may hold only letters, digits, _ and -"
                )
        if self.calibrate.variant not in self.variants:
            raise ParamsError(
                f"calibrate.variant: {self.calibrate.variant!r} is not a variant; "
                f"choose one of {sorted(self.variants)}"
            )
        if not self.variants[self.calibrate.variant].batchnorm:
            raise ParamsError(
                f"calibrate.variant: {self.calibrate.variant!r} has no BatchNorm; choose one of "
                f"{sorted(name for name, v in self.variants.items() if v.batchnorm)}"
            )


def _type_name(tp):
    return getattr(tp, "__name__", str(tp))


def _convert(value, tp, key):
    """Check `value` against the annotation `tp`; return it in that type."""
    origin = typing.get_origin(tp)
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
        for arg in typing.get_args(tp):
            if arg is type(None) and value is None:
                return None
        return _convert(value, next(a for a in typing.get_args(tp) if a is not type(None)), key)
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
    """Build dataclass `cls` from a mapping, rejecting unknown keys and wrong types."""
    if values is None:
        values = {}
    if not isinstance(values, dict):
        raise ParamsError(f"{key or 'params'}: expected a mapping, got {values!r}")
    hints = typing.get_type_hints(cls)
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


def load_params(values):
    """Validate the whole params.yaml mapping; return Params."""
    return build(Params, values)
