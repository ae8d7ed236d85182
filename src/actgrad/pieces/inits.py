"""Init schemes: how one weight tensor starts, from a randn draw of the seed's generator.

Every scheme is given the same draw, so all variants of a seed see the same minibatches
afterwards. params.yaml writes a scheme in short: a number (randn × number), a bare name
(kaiming, xavier, zeros), or {name: {its params}} ({kaiming: {gain: 1.41}}, {constant: 0.1}).
`tensor(drawn, fan_in, fan_out, activation_gain)` is the tensor the scheme makes of the draw.
"""

from typing import ClassVar, Literal

from pydantic import Field

from ..params import Section


class Init(Section):
    """The base of every init scheme."""

    name: str
    unnamed: ClassVar = ("name",)  # params.yaml names a scheme by its key: {kaiming: {gain: 2}}


class Randn(Init):
    """randn × scale: the lecture's hand-picked scales (a bare number in params.yaml)."""

    name: Literal["randn"] = "randn"
    scale: float

    def tensor(self, drawn, fan_in, fan_out, activation_gain):
        return drawn * self.scale

    def __str__(self):
        return f"randn x {self.scale:g}"


class Kaiming(Init):
    """randn × gain / √fan_in, which keeps the forward pass's scale through the layer, or with
    mode fan_out randn × gain / √fan_out, which keeps the backward pass's; the gain is the
    activation's unless given."""

    name: Literal["kaiming"] = "kaiming"
    gain: float | None = Field(None, gt=0)
    mode: Literal["fan_in", "fan_out"] = "fan_in"

    def tensor(self, drawn, fan_in, fan_out, activation_gain):
        gain = activation_gain if self.gain is None else self.gain
        return drawn * gain / (fan_in if self.mode == "fan_in" else fan_out) ** 0.5

    def __str__(self):
        words = ["kaiming"] + ([f"{self.gain:g}"] if self.gain is not None else [])
        return " ".join(words + (["fan_out"] if self.mode == "fan_out" else []))


class Xavier(Init):
    """randn × gain × √(2 / (fan_in + fan_out)); the gain is 1 unless given."""

    name: Literal["xavier"] = "xavier"
    gain: float | None = Field(None, gt=0)

    def tensor(self, drawn, fan_in, fan_out, activation_gain):
        gain = 1.0 if self.gain is None else self.gain
        return drawn * (gain * (2 / (fan_in + fan_out)) ** 0.5)

    def __str__(self):
        return "xavier" if self.gain is None else f"xavier {self.gain:g}"


class TorchLinear(Init):
    """torch.nn.Linear's own default, for its weight and its bias: uniform on
    (-1/√fan_in, 1/√fan_in). Made from the randn draw z as erf(z/√2)/√fan_in: erf(z/√2) is
    uniform on (-1, 1)."""

    name: Literal["torch_linear"] = "torch_linear"

    def tensor(self, drawn, fan_in, fan_out, activation_gain):
        return (drawn / 2**0.5).erf() / fan_in**0.5

    def __str__(self):
        return "torch_linear"


class Zeros(Init):
    name: Literal["zeros"] = "zeros"

    def tensor(self, drawn, fan_in, fan_out, activation_gain):
        return drawn.new_zeros(drawn.shape)

    def __str__(self):
        return "zeros"


class Constant(Init):
    """The same value everywhere."""

    name: Literal["constant"] = "constant"
    value: float

    def tensor(self, drawn, fan_in, fan_out, activation_gain):
        return drawn.new_full(drawn.shape, self.value)

    def __str__(self):
        return f"constant {self.value:g}"
